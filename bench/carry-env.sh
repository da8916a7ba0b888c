# Sourced by the device-side scripts: unpacks .carry/lib.tar.xz (written by
# bench/make-carry.sh) once and puts .carry/lib on the library path.
if [ -f .carry/lib.tar.xz ] && [ ! -d .carry/lib ]; then
  tar -xJf .carry/lib.tar.xz -C .carry
fi
[ -d .carry/lib ] && export LD_LIBRARY_PATH=$PWD/.carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -f .carry/COMMIT ] && export MMREC_COMMIT=$(cat .carry/COMMIT)
