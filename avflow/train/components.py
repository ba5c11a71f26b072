"""Plain name -> builder tables for models, tasks and datasets. Real models add one entry each here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
from avflow.codecs.world_video_codec import WorldVideoCodec, WorldVideoCodecConfig
from avflow.models.binaural import BinauralConfig, BinauralFlow
from avflow.models.joint import JointConfig, JointModel
from avflow.train.binaural_task import BinauralFlowConfig, BinauralFlowTask
from avflow.train.codec_tasks import (
    AudioReconstructionConfig,
    AudioReconstructionTask,
    DecoderHeadsConfig,
    DecoderHeadsTask,
    VideoReconstructionConfig,
    VideoReconstructionTask,
)
from avflow.train.datasets import (
    SyntheticConfig,
    SyntheticStreams,
    TensorFile,
    TensorFileConfig,
    WorldClips,
    WorldClipsConfig,
)
from avflow.train.flow_task import FlowMatchingConfig, FlowMatchingTask
from avflow.train.joint_task import JointFlowConfig, JointFlowTask
from avflow.train.mmaudio_recipe import (
    MixtureConfig,
    MMAudioMixture,
    MMAudioModelConfig,
    MMAudioRecipe,
    MMAudioRecipeConfig,
    build_model,
)
from avflow.train.toy import ToyFlowConfig, ToyFlowModel


@dataclass(frozen=True)
class ComponentSpec:
    config: type  # the dataclass its `args` map onto (strictly)
    build: Callable[[Any], Any]  # config instance -> model / task / dataset


MODELS: dict[str, ComponentSpec] = {
    "toy_flow": ComponentSpec(ToyFlowConfig, ToyFlowModel),
    "mmaudio": ComponentSpec(MMAudioModelConfig, build_model),
    "joint": ComponentSpec(JointConfig, JointModel),
    "binaural": ComponentSpec(BinauralConfig, BinauralFlow),
    "world_video_codec": ComponentSpec(WorldVideoCodecConfig, WorldVideoCodec),
    "world_audio_codec": ComponentSpec(WorldAudioCodecConfig, WorldAudioCodec),
}

# A task has `loss(model, batch) -> scalar`, optional `prepare(batch, device) -> batch` (randomness, device
# transfer; run outside autocast/compile) and optional `sample(model, batch) -> dict[str, float]` (metrics).
TASKS: dict[str, ComponentSpec] = {
    "flow_matching": ComponentSpec(FlowMatchingConfig, FlowMatchingTask),
    "joint_flow": ComponentSpec(JointFlowConfig, JointFlowTask),
    "binaural_flow": ComponentSpec(BinauralFlowConfig, BinauralFlowTask),
    "mmaudio_recipe": ComponentSpec(MMAudioRecipeConfig, MMAudioRecipe),
    "video_reconstruction": ComponentSpec(VideoReconstructionConfig, VideoReconstructionTask),
    "audio_reconstruction": ComponentSpec(AudioReconstructionConfig, AudioReconstructionTask),
    "decoder_heads": ComponentSpec(DecoderHeadsConfig, DecoderHeadsTask),
}

DATASETS: dict[str, ComponentSpec] = {
    "synthetic": ComponentSpec(SyntheticConfig, SyntheticStreams),
    "tensor_file": ComponentSpec(TensorFileConfig, TensorFile),
    "mmaudio_mixture": ComponentSpec(MixtureConfig, MMAudioMixture),
    "world_clips": ComponentSpec(WorldClipsConfig, WorldClips),
}
