#!/bin/sh
# Flotilla's example sensor workload, for the busybox image.
#
# Every $INTERVAL seconds (default 5) it takes a reading, the 1-minute load
# average from /proc/loadavg, and prints it as one JSON line:
#
#   {"sensor":"plant-a-3","time":"2025-01-01T12:00:05Z","seq":2,"load1":0.42}
#
# to stdout (the container log) and, when $DATA_DIR (default /data) is a
# directory, appends it to $DATA_DIR/readings.jsonl: mount a volume there to
# keep readings across restarts. load1 is null where /proc is not mounted.
# $SENSOR_ID names the sensor (default: the host name, i.e. the replica).
# SIGTERM stops it at once, between readings.
set -eu

interval=${INTERVAL:-5}
data_dir=${DATA_DIR:-/data}
sensor=${SENSOR_ID:-$(hostname)}

case $interval in
'' | *[!0-9]* | 0)
    echo "sensor: INTERVAL must be a whole number of seconds above 0, got '$interval'" >&2
    exit 2
    ;;
esac

# As PID 1 of a container the shell ignores SIGTERM unless it traps it.
running=1
trap 'running=0' TERM INT

seq=0
while [ "$running" = 1 ]; do
    seq=$((seq + 1))
    # null when /proc is not mounted (a bare chroot): keep reporting anyway.
    load1=$(cut -d ' ' -f 1 /proc/loadavg 2>/dev/null) || load1=null
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    line=$(printf '{"sensor":"%s","time":"%s","seq":%d,"load1":%s}' "$sensor" "$now" "$seq" "$load1")
    echo "$line"
    if [ -d "$data_dir" ]; then
        echo "$line" >>"$data_dir/readings.jsonl"
    fi
    # Sleep in the background and wait for it: a trapped signal interrupts
    # `wait` at once, where a foreground sleep would finish first.
    sleep "$interval" &
    sleeper=$!
    wait "$sleeper" || kill "$sleeper" 2>/dev/null || true
done
echo "sensor: stopped after $seq readings"
