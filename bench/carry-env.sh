# Sourced by the device-side scripts: unpacks .carry/lib.tar.xz (written by
# bench/make-carry.sh) once, outside the work tree (an unpacked copy inside
# it would count against the device tool's 64 MiB, should the scripts be
# tried on this machine first), and puts it on the library path.
if [ -f .carry/lib.tar.xz ]; then
  MMREC_CARRY_LIB=${TMPDIR:-/tmp}/mmrec-carry-lib-$(stat -c %Y-%s .carry/lib.tar.xz)
  if [ ! -d "$MMREC_CARRY_LIB" ]; then
    mkdir -p "$MMREC_CARRY_LIB.tmp" && tar -xJf .carry/lib.tar.xz -C "$MMREC_CARRY_LIB.tmp" &&
      mv "$MMREC_CARRY_LIB.tmp/lib" "$MMREC_CARRY_LIB" && rm -rf "$MMREC_CARRY_LIB.tmp"
  fi
  export LD_LIBRARY_PATH=$MMREC_CARRY_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
[ -f .carry/COMMIT ] && export MMREC_COMMIT=$(cat .carry/COMMIT)
