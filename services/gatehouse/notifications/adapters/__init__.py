"""The notifications adapters: tables, repositories, senders, the template cache, the sink."""
