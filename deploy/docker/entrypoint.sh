#!/bin/sh
# No arguments: serve the service this container is for ($GATEHOUSE_SERVICE, from the image's
# SERVICE build argument or the environment). Arguments: any `gatehouse` command.
set -eu
if [ "$#" -eq 0 ]; then
    exec gatehouse serve "${GATEHOUSE_SERVICE:?set GATEHOUSE_SERVICE to auth, access, monitoring, payments or notifications}"
fi
exec gatehouse "$@"
