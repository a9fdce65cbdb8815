"""The dataset's features, declared once (TFDS style); the Parquet schema and its Hugging Face
metadata, the TFDS feature spec, the TFRecord examples and the readers all derive from it."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str              # png (28x28 grayscale), class (ClassLabel index), string, float32
    in_tfrecord: bool      # the TFRecord example holds the image and the label only
    doc: str


FEATURES = (
    Feature("image", "png", True, "28×28 grayscale PNG, white ink on black"),
    Feature("label", "class", True, "class index (a ClassLabel)"),
    Feature("label_name", "string", False, "the character"),
    Feature("confidence", "float32", False, "the validator's probability of the label"),
    Feature("sample_id", "string", False, "work unit, round and candidate: unique and stable"),
    # pandas and pyarrow read data/ as one table: this tells the splits apart there.
    Feature("split", "string", False, "the split the sample belongs to"),
)
IMAGE_SHAPE = (28, 28, 1)
_ARROW = {"png": pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())]),
          "class": pa.int64(), "string": pa.string(), "float32": pa.float32()}


def _hf_feature(feature: Feature, labels: list[str]) -> dict:
    if feature.kind == "png":
        return {"_type": "Image"}
    if feature.kind == "class":
        return {"names": labels, "_type": "ClassLabel"}
    return {"dtype": feature.kind, "_type": "Value"}


def parquet_schema(labels: list[str]) -> pa.Schema:
    """Arrow schema of a Parquet shard, with the ``huggingface`` metadata that declares the
    image and the class label to Hugging Face ``datasets``."""
    hf = {f.name: _hf_feature(f, labels) for f in FEATURES}
    return pa.schema([pa.field(f.name, _ARROW[f.kind]) for f in FEATURES],
                     metadata={b"huggingface": json.dumps({"info": {"features": hf}}).encode()})


def hf_label_names(schema_metadata: dict | None) -> list[str] | None:
    """The class names a Parquet shard's Hugging Face metadata declares, if any."""
    features = json.loads((schema_metadata or {}).get(b"huggingface", b"{}") or b"{}")
    label = next(f.name for f in FEATURES if f.kind == "class")
    return features.get("info", {}).get("features", {}).get(label, {}).get("names")


def tfds_features(num_classes: int) -> dict:
    """TFDS's features.json for the TFRecord shards."""
    features = {}
    for f in FEATURES:
        if not f.in_tfrecord:
            continue
        if f.kind == "png":
            features[f.name] = {
                "image": {"dtype": "uint8", "encodingFormat": "png",
                          "shape": {"dimensions": [str(d) for d in IMAGE_SHAPE]}},
                "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image"}
        else:
            features[f.name] = {
                "classLabel": {"numClasses": str(num_classes)},
                "pythonClassName":
                    "tensorflow_datasets.core.features.class_label_feature.ClassLabel"}
    return {"featuresDict": {"features": features},
            "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict"}


def example_bytes(values: dict) -> bytes:
    """One serialised ``tf.train.Example`` of the TFRecord features (``values[name]``)."""
    from kepkreator.data.example_proto import encode_example
    return encode_example({f.name: (bytes(values[f.name]) if f.kind == "png"
                                    else int(values[f.name]))
                           for f in FEATURES if f.in_tfrecord})


def parse_example(record: bytes) -> dict:
    """The TFRecord features of one serialised example: PNG bytes and the label index."""
    from kepkreator.data.example_proto import decode_example
    stored = decode_example(record)
    missing = [f.name for f in FEATURES if f.in_tfrecord and not stored.get(f.name)]
    if missing:
        raise ValueError(f"a TFRecord example lacks {', '.join(missing)}")
    return {f.name: stored[f.name][0] for f in FEATURES if f.in_tfrecord}
