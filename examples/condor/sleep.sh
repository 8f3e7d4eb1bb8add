#!/bin/sh
# One job of sleep.sub: sleeps 2-6 s, then says which it was and where it ran.
sleep $(( 2 + $1 % 5 ))
echo "job $1 done on $(hostname) slot ${_CONDOR_SLOT:-?}"
