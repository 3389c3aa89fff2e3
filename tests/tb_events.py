"""Read TensorBoard event files without TensorBoard: TFRecord frames of tensorboardX's ``Event`` protos."""

import struct
from pathlib import Path


def events(folder: Path):
    """Every ``Event`` in ``folder``'s event files, in file order."""
    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(folder.glob("events.out*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event()
            event.ParseFromString(data[at + 12:at + 12 + length])       # after the length and its CRC
            at += 12 + length + 4                                      # and the data's CRC
            yield event


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every scalar of ``tag``."""
    return [(e.step, v.simple_value) for e in events(folder) if e.HasField("summary")
            for v in e.summary.value if v.tag == tag]


def hparams_summary(folder: Path) -> tuple[dict, set[str]]:
    """The HParams experiment summary: {hyperparameter: value} of the session, and the metric tags it declares."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    params, metrics = {}, set()
    for e in events(folder):
        for v in e.summary.value if e.HasField("summary") else ():
            if v.metadata.plugin_data.plugin_name != "hparams":
                continue
            data = HParamsPluginData.FromString(v.metadata.plugin_data.content)
            if data.HasField("experiment"):
                metrics |= {m.name.tag for m in data.experiment.metric_infos}
            if data.HasField("session_start_info"):
                for name, value in data.session_start_info.hparams.items():
                    kind = value.WhichOneof("kind")
                    params[name] = getattr(value, kind)
    return params, metrics
