"""TensorBoard scalars written without TensorFlow: event records straight to an events file.

The file is what tf.summary writes (TFRecord framing around Event protos), so TensorBoard reads
it; the parts data set's runs then never load TensorFlow.
"""

import os
import socket
import struct
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


class ScalarWriter:
  """Appends scalar summaries to a new events file in `logdir`."""

  def __init__(self, logdir):
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{time.time():010.0f}.{socket.gethostname()}.{os.getpid()}'
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, 'wb')  # pylint: disable=consider-using-with
    self._records = RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event):
    self._records.write(event.SerializeToString())

  def scalar(self, tag, value, step):
    """Records `value` under `tag` at `step`."""
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                    simple_value=float(value))])
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


def read_scalars(path):
  """{tag: [(step, value)]} of an events file (for tests and notebooks; no TensorFlow)."""
  out = {}
  with open(path, 'rb') as f:
    data = f.read()
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[offset:offset + 8])
    record = data[offset + 12:offset + 12 + length]
    offset += 12 + length + 4
    event = event_pb2.Event.FromString(record)
    for value in event.summary.value:
      out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out
