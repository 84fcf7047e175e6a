#!/bin/sh
# Starts the game in $MARLKIT_UNITY_GAME with mlagents' arguments, tied to the env runner that launches it: the game
# gets SIGKILL when that process dies (Ray kills env runners without running their cleanup), so no game outlives it.
if command -v setpriv >/dev/null 2>&1; then
    exec setpriv --pdeathsig KILL -- "$MARLKIT_UNITY_GAME" "$@"
fi
exec "$MARLKIT_UNITY_GAME" "$@"
