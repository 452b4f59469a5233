#!/usr/bin/env bash
# nbdcopy of a 1 GiB backup image from `cairn serve-nbd` (cold: empty cache; warm: second copy
# through a cache that holds it) beside `qemu-nbd -r -f raw -t -e 8` of the same raw image in the
# page cache, ROUNDS times in one run; then fio random 4 KiB reads (ioengine=nbd, 2 jobs,
# iodepth 32) against both. Needs nbdcopy and nbdinfo (libnbd-bin), qemu-nbd and fio.
#
#   cargo build --release -p cairn && bash cli/benches/nbdcopy.sh [DIR]
#
# DIR holds `cairn demo --keep DIR` output; it is made (1 GiB) when absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-target/bench/nbd}; CAIRN=${CAIRN:-target/release/cairn}; ROUNDS=${ROUNDS:-3}
[ -f "$D/sample.fidx" ] || "$CAIRN" -q demo --size 1G --keep "$D"
cat "$D/sample.img" > /dev/null; find "$D/pbs-datastore" -type f -exec cat {} + > /dev/null
qemu-nbd -r -f raw -t -e 8 -b 127.0.0.1 -p 10820 -x sample "$D/sample.img" & QPID=$!
trap 'kill $QPID 2>/dev/null || true' EXIT
start_cairn() {
  "$CAIRN" -q serve-nbd --store "pbs:$D/pbs-datastore" "$D/sample.fidx" --listen 127.0.0.1:10821 \
    --cache-size "$1" & CPID=$!
  for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:10821/sample >/dev/null 2>&1 && return; sleep 0.1; done
  echo "cairn serve-nbd did not start" >&2; exit 1
}
stop_cairn() { kill -INT "$CPID"; wait "$CPID" || true; }
mbps() {
  local s e; s=$(date +%s.%N); nbdcopy "$1" null:; e=$(date +%s.%N)
  python3 -c "print(f'{$(stat -c %s "$D/sample.img")/($e-$s)/1e6:.0f}')"
}
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
for _ in $(seq 50); do nbdinfo --size nbd://127.0.0.1:10820/sample >/dev/null 2>&1 && break; sleep 0.1; done
for r in $(seq "$ROUNDS"); do
  q=$(mbps nbd://127.0.0.1:10820/sample)
  start_cairn 256MiB; cold=$(mbps nbd://127.0.0.1:10821/sample); stop_cairn
  start_cairn 2GiB; mbps nbd://127.0.0.1:10821/sample >/dev/null; warm=$(mbps nbd://127.0.0.1:10821/sample)
  echo "round $r: qemu-nbd $q MB/s; cairn cold $cold MB/s ($(ratio "$cold" "$q")x), warm $warm MB/s ($(ratio "$warm" "$q")x)"
  if [ "$r" = "$ROUNDS" ]; then
    for server in "qemu-nbd 10820" "cairn-warm 10821"; do
      set -- $server
      fio --name=rand --ioengine=nbd --uri="nbd://127.0.0.1:$2/sample" --rw=randread --bs=4k \
        --iodepth=32 --numjobs=2 --time_based --runtime=5 --size=1G --group_reporting 2>/dev/null \
        | grep -E "IOPS" | sed "s/^ */$1 random 4 KiB: /"
    done
  fi
  stop_cairn
done
