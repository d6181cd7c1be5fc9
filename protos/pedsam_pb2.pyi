from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_FP32: _ClassVar[Codec]
    CODEC_FP16: _ClassVar[Codec]
    CODEC_INT8: _ClassVar[Codec]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_ZSTD_PLANES: _ClassVar[Compression]
CODEC_UNSPECIFIED: Codec
CODEC_FP32: Codec
CODEC_FP16: Codec
CODEC_INT8: Codec
COMPRESSION_NONE: Compression
COMPRESSION_ZSTD_PLANES: Compression

class Tensor(_message.Message):
    __slots__ = ("codec", "shape", "data", "scales", "compression")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    codec: Codec
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scales: bytes
    compression: Compression
    def __init__(self, codec: _Optional[_Union[Codec, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scales: _Optional[bytes] = ..., compression: _Optional[_Union[Compression, str]] = ...) -> None: ...

class WindowExtent(_message.Message):
    __slots__ = ("height", "width")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("request_id", "frame_id", "segment", "model_fingerprint", "extents", "tokens", "result_codec", "finish_block", "mixed", "skip_segment", "start_block", "residual_result", "result_compression")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EXTENTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESULT_CODEC_FIELD_NUMBER: _ClassVar[int]
    FINISH_BLOCK_FIELD_NUMBER: _ClassVar[int]
    MIXED_FIELD_NUMBER: _ClassVar[int]
    SKIP_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    START_BLOCK_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    frame_id: int
    segment: int
    model_fingerprint: str
    extents: _containers.RepeatedCompositeFieldContainer[WindowExtent]
    tokens: Tensor
    result_codec: Codec
    finish_block: int
    mixed: Tensor
    skip_segment: bool
    start_block: int
    residual_result: bool
    result_compression: Compression
    def __init__(self, request_id: _Optional[int] = ..., frame_id: _Optional[int] = ..., segment: _Optional[int] = ..., model_fingerprint: _Optional[str] = ..., extents: _Optional[_Iterable[_Union[WindowExtent, _Mapping]]] = ..., tokens: _Optional[_Union[Tensor, _Mapping]] = ..., result_codec: _Optional[_Union[Codec, str]] = ..., finish_block: _Optional[int] = ..., mixed: _Optional[_Union[Tensor, _Mapping]] = ..., skip_segment: _Optional[bool] = ..., start_block: _Optional[int] = ..., residual_result: _Optional[bool] = ..., result_compression: _Optional[_Union[Compression, str]] = ...) -> None: ...

class SegmentResult(_message.Message):
    __slots__ = ("request_id", "frame_id", "segment", "tokens", "compute_seconds", "qkv", "residual", "received_seconds", "sent_seconds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QKV_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SENT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    frame_id: int
    segment: int
    tokens: Tensor
    compute_seconds: float
    qkv: Tensor
    residual: bool
    received_seconds: float
    sent_seconds: float
    def __init__(self, request_id: _Optional[int] = ..., frame_id: _Optional[int] = ..., segment: _Optional[int] = ..., tokens: _Optional[_Union[Tensor, _Mapping]] = ..., compute_seconds: _Optional[float] = ..., qkv: _Optional[_Union[Tensor, _Mapping]] = ..., residual: _Optional[bool] = ..., received_seconds: _Optional[float] = ..., sent_seconds: _Optional[float] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("clock_seconds",)
    CLOCK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    clock_seconds: float
    def __init__(self, clock_seconds: _Optional[float] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("preset", "fingerprint", "window_size", "embed_dim", "num_segments", "random_weights", "codecs", "max_windows_per_request", "max_message_bytes", "global_blocks", "compressions", "device", "device_name", "compute_dtype", "device_memory_bytes")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    EMBED_DIM_FIELD_NUMBER: _ClassVar[int]
    NUM_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    MAX_WINDOWS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    preset: str
    fingerprint: str
    window_size: int
    embed_dim: int
    num_segments: int
    random_weights: bool
    codecs: _containers.RepeatedScalarFieldContainer[Codec]
    max_windows_per_request: int
    max_message_bytes: int
    global_blocks: _containers.RepeatedScalarFieldContainer[int]
    compressions: _containers.RepeatedScalarFieldContainer[Compression]
    device: str
    device_name: str
    compute_dtype: str
    device_memory_bytes: int
    def __init__(self, preset: _Optional[str] = ..., fingerprint: _Optional[str] = ..., window_size: _Optional[int] = ..., embed_dim: _Optional[int] = ..., num_segments: _Optional[int] = ..., random_weights: _Optional[bool] = ..., codecs: _Optional[_Iterable[_Union[Codec, str]]] = ..., max_windows_per_request: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., global_blocks: _Optional[_Iterable[int]] = ..., compressions: _Optional[_Iterable[_Union[Compression, str]]] = ..., device: _Optional[str] = ..., device_name: _Optional[str] = ..., compute_dtype: _Optional[str] = ..., device_memory_bytes: _Optional[int] = ...) -> None: ...
