#!/usr/bin/env python3
"""Reads a run directory's TensorBoard event files back with the tensorboard package.

usage: read_events.py RUN_DIR

First every events.out.tfevents.* file of RUN_DIR, in name order, record by
record with tensorboard's own TFRecord reader, which checks both masked CRC-32Cs
of each record: a bad checksum or a torn record is an error here (TensorBoard's
loader would stop at it silently). Each file must start with file_version
"brain.Event:2", then a SessionLog START, then summaries. Prints `file NAME
RECORDS` per file.

Then what TensorBoard shows: the run's scalars as its EventAccumulator loads
them (all points kept; a step written again by a resumed run replaces the points
from that step on). Prints `scalar TAG STEP VALUE` per point, in step order.

Exit 0 when all reads, 1 on a bad file, 77 when tensorboard is not installed.
"""
import glob
import os
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)


def check_file(path):
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    records = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        event = event_pb2.Event.FromString(reader.record())
        if records == 0 and event.file_version != "brain.Event:2":
            raise SystemExit(f"{path}: first record has file_version {event.file_version!r}")
        if records == 1 and event.session_log.status != event_pb2.SessionLog.START:
            raise SystemExit(f"{path}: record 1 is not a SessionLog START")
        if records > 1 and not event.HasField("summary"):
            raise SystemExit(f"{path}: record {records} has no summary")
        records += 1
    return records


def main():
    run = sys.argv[1]
    files = sorted(glob.glob(os.path.join(run, "events.out.tfevents.*")))
    if not files:
        raise SystemExit(f"{run}: no event files")
    for f in files:
        try:
            print("file", os.path.basename(f), check_file(f))
        except errors.DataLossError as e:
            raise SystemExit(f"{f}: {e}")
    acc = event_accumulator.EventAccumulator(run, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    for tag in sorted(acc.Tags()["scalars"]):
        for e in acc.Scalars(tag):
            print("scalar", tag, e.step, repr(e.value))


if __name__ == "__main__":
    main()
