"""The human-models evaluators: gender classifiers, face-embedding verifiers and a realism featurizer.

Each runs one TF.js graph (compiled once into a torch module by :mod:`.graph`) on inputs prepared
as the network was trained (:mod:`.preprocess`). The measured figures in the descriptions come from
``benchmarks/panel_validity.py`` on LFW3D originals; evaluators that pass its bar (gender AUC >= 0.90,
verification EER <= 0.20) are primary, i.e. default members of the evaluator panel.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from sbpet_bench.api import Featurizer, GenderClassifier, Option, PluginContext, PluginError, Verifier

from . import assets
from .assets import GraphFiles
from .graph import CompiledGraph, compile_graph
from .loader import GraphFormatError, Node, TfjsGraph, load_graph
from .ops import UnsupportedOp
from .preprocess import PAD_MODES, Preprocess
from .shared_forward import SHARED


class _GraphEvaluator:
    """Shared by every evaluator here: loads its graph from the model store and runs it in chunks."""

    files: ClassVar[GraphFiles]
    preprocess: ClassVar[Preprocess]
    outputs: ClassVar[tuple[str, ...]]  # graph node names, in the order forward() returns them
    result: ClassVar[int] = 0  # which of the outputs this evaluator reports
    # evaluators of one graph that the harness runs on the same images share a pass (shared_forward.py)
    shares_forward: ClassVar[bool] = False

    @classmethod
    def _options(cls) -> dict[str, Option]:
        return {
            "batch_size": Option(64, "images per forward pass (lower it if memory runs out)"),
            "pad": Option(cls.preprocess.pad, "border added around LFW3D's tight crop, as a fraction of the face's side"),
            "pad_mode": Option(cls.preprocess.pad_mode, "how the border is filled", choices=PAD_MODES),
        }

    def _repair(self, graph: TfjsGraph) -> TfjsGraph:
        """A hook for graphs shipped with a known conversion error; most are fine as they are."""
        return graph

    def _setup(self, context: PluginContext) -> None:
        model_json, weights = (context.model_path(name) for name in self.files.names)
        self._model_file = str(model_json)
        try:
            graph = self._repair(load_graph(model_json, {f"{self.files.stem}.bin": weights}))
            self.net: CompiledGraph = compile_graph(graph, self.outputs).to(self.device).eval()
        except (GraphFormatError, UnsupportedOp) as exc:
            raise PluginError(f"{self.name}: cannot run {model_json}: {exc} (re-fetch it with "
                              f"`sbpet models fetch --force {' '.join(self.files.names)}`)") from exc
        self.net.requires_grad_(False)  # fixed weights; gradients still flow to the images
        self.prep = self.preprocess.with_pad(float(self.opts["pad"]), self.opts["pad_mode"])

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph's outputs for (B, 3, H, W) RGB images in [0, 1]; differentiable with respect to them."""
        if not self.shares_forward:
            return self._forward(images)
        key = (self.files.stem, self._model_file, self.prep, self.outputs, str(self.device))
        return SHARED.get_or_run(key, images, self._forward)

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = int(self.opts["batch_size"])
        chunks = [self.net(self.prep(images[i:i + size].to(self.device))) for i in range(0, images.shape[0], size)]
        if not chunks:
            raise PluginError(f"{self.name}: got an empty batch")
        return tuple(torch.cat(parts) for parts in zip(*chunks))


class _HumanGender(_GraphEvaluator, GenderClassifier):
    male_index: ClassVar[int]  # which column of the first output is P(male)

    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self._setup(context)

    def predict_male(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[self.result][:, self.male_index].clamp(0.0, 1.0)


class _HumanVerifier(_GraphEvaluator, Verifier):
    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self._setup(context)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.run(images)[self.result].flatten(1), dim=1)


_FACERES_PREP = Preprocess(224, colour="bgr", value_range="caffe", pad=0.1, pad_mode="zeros")
_FACERES_DEEP_PREP = Preprocess(224, colour="bgr", value_range="caffe")
# both heads of the faceres networks: the gender classifier and the verifier of one network share a pass
_FACERES_OUTPUTS = ("gender_pred/Sigmoid", "global_pooling/Mean")


class FaceresGender(_HumanGender):
    name = "hm-faceres-gender"
    version = "1"
    description = ("human-models faceres (HSE MobileNet, VGGFace2 backbone): gender sigmoid; BGR caffe input, 10% black border; "
                   "LFW3D gender AUC 0.995 (2,000 balanced)")
    files, preprocess, outputs, result, shares_forward = assets.FACERES, _FACERES_PREP, _FACERES_OUTPUTS, 0, True
    models, input_size, male_index = assets.FACERES.names, _FACERES_PREP.face_size, 0
    evaluator_role = "primary"


class FaceresDeepGender(_HumanGender):
    name = "hm-faceres-deep-gender"
    version = "1"
    description = ("human-models faceres-deep (a fine-tune of faceres's network: weights correlate 0.99, not independent of it): "
                   "gender sigmoid; LFW3D gender AUC 0.994 on a small sample (120 images)")
    files, preprocess, outputs, result, shares_forward = assets.FACERES_DEEP, _FACERES_DEEP_PREP, _FACERES_OUTPUTS, 0, True
    models, input_size, male_index = assets.FACERES_DEEP.names, _FACERES_DEEP_PREP.face_size, 0


class GearGender(_HumanGender):
    name = "hm-gear"
    version = "1"
    description = ("human-models GEAR-Predictor (UTKFace): gender softmax; RGB [0, 1], 20% replicated border; "
                   "LFW3D gender AUC 0.906 (2,000 balanced), just over the 0.90 bar")
    preprocess = Preprocess(198, colour="rgb", value_range="unit", pad=0.2, pad_mode="replicate")
    files, outputs = assets.GEAR, ("Identity_1",)  # heads: Identity age [7], Identity_1 gender [2], Identity_2 race [5]
    models, input_size, male_index = assets.GEAR.names, preprocess.face_size, 0
    evaluator_role = "primary"


class SsrnetGender(_HumanGender):
    name = "hm-ssrnet"
    version = "1"
    description = ("human-models SSR-Net gender (IMDB-WIKI): one value, 1 = male; BGR 0-255, 40% replicated border; "
                   "LFW3D gender AUC 0.817 (2,000 balanced): below the 0.90 bar, not a default")
    preprocess = Preprocess(64, colour="bgr", value_range="byte", pad=0.4, pad_mode="replicate")
    files, outputs = assets.SSRNET, ("Identity",)
    models, input_size, male_index = assets.SSRNET.names, preprocess.face_size, 0


class MiniXceptionGender(_HumanGender):
    name = "hm-gender"
    version = "1"
    description = ("human-models gender (oarriaga mini-Xception, IMDB-WIKI): softmax, index 1 = man; gray [-1, 1], 30% black "
                   "border; LFW3D gender AUC 0.800 (2,000 balanced): below the 0.90 bar, not a default")
    preprocess = Preprocess(64, colour="gray", value_range="signed", pad=0.3, pad_mode="zeros")
    files, outputs = assets.GENDER, ("Identity",)
    models, input_size, male_index = assets.GENDER.names, preprocess.face_size, 1


class FaceresVerifier(_HumanVerifier):
    name = "hm-faceres"
    version = "1"
    description = ("human-models faceres (HSE MobileNet, VGGFace2): L2-normalised 1024-D global-pooling descriptor; "
                   "LFW3D EER 0.069 (1,500 + 1,500 pairs)")
    files, preprocess, outputs, result, shares_forward = assets.FACERES, _FACERES_PREP, _FACERES_OUTPUTS, 1, True
    models, input_size = assets.FACERES.names, _FACERES_PREP.face_size
    evaluator_role = "primary"


class FaceresDeepVerifier(_HumanVerifier):
    name = "hm-faceres-deep"
    version = "1"
    description = ("human-models faceres-deep (a fine-tune of faceres's network: weights correlate 0.99, not independent of it): "
                   "1024-D descriptor; LFW3D EER 0.13 on a small sample (100 + 100 pairs)")
    files, preprocess, outputs, result, shares_forward = assets.FACERES_DEEP, _FACERES_DEEP_PREP, _FACERES_OUTPUTS, 1, True
    models, input_size = assets.FACERES_DEEP.names, _FACERES_DEEP_PREP.face_size


class MobileFaceVerifier(_HumanVerifier):
    name = "hm-mobileface"
    version = "1"
    description = ("human-models MobileFace (becauseofAI): L2-normalised 256-D embedding; RGB 0-255, 20% replicated border; "
                   "LFW3D EER 0.188 (1,500 + 1,500 pairs), just under the 0.20 bar")
    preprocess = Preprocess(112, colour="rgb", value_range="byte", pad=0.2, pad_mode="replicate")
    files, outputs = assets.MOBILEFACE, ("batchnorm0/add_1",)  # the graph itself maps 0-255 to (x - 127.5) / 128
    models, input_size = assets.MOBILEFACE.names, preprocess.face_size
    evaluator_role = "primary"


def unfuse_prelu_relu(graph: TfjsGraph) -> TfjsGraph:
    """Undo a ReLU that the converter fused into a convolution whose raw output a PReLU also needs.

    The PReLU is written ``relu(x) + alpha * (x - abs(x)) / 2``. Where the converter fused that
    ``relu`` into the convolution producing ``x``, the ``abs``/``sub`` branch receives ``relu(x)``
    and the negative slope is lost. The repair keeps the fusion's bias only and gives the PReLU's
    positive branch (the other consumers) a ReLU node of its own.
    """
    consumers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)
    nodes: list[Node] = []
    for node in graph.nodes:
        nodes.append(node)
        users = consumers.get(node.name, [])
        if node.attrs.get("fused_ops") != ["BiasAdd", "Relu"] or not any(u.op == "Abs" for u in users):
            continue
        node.attrs = {**node.attrs, "fused_ops": ["BiasAdd"]}
        relu = Node(f"{node.name}/positive_part", "Relu", [node.name])
        nodes.append(relu)
        for user in users:
            if user.op not in ("Abs", "Sub"):
                user.inputs = [relu.name if i == node.name else i for i in user.inputs]
    return TfjsGraph(nodes, graph.constants, graph.source)


class MobileFaceNetVerifier(_HumanVerifier):
    name = "hm-mobilefacenet"
    version = "1"
    description = ("human-models MobileFaceNet: 192-D embedding; RGB [-1, 1]. The shipped graph fuses a ReLU into 16 "
                   "depthwise convolutions whose outputs also feed a PReLU (a conversion error); option repair undoes it. "
                   "LFW3D EER 0.34 repaired, 0.38 as shipped (150 + 150 pairs): above the 0.20 bar, not a default")
    preprocess = Preprocess(112, colour="rgb", value_range="signed")
    files, outputs = assets.MOBILEFACENET, ("embeddings",)
    models, input_size = assets.MOBILEFACENET.names, preprocess.face_size

    @classmethod
    def _options(cls) -> dict[str, Option]:
        return {**super()._options(), "repair": Option(True, "restore the PReLUs that the conversion turned into ReLUs")}

    def _repair(self, graph: TfjsGraph) -> TfjsGraph:
        return unfuse_prelu_relu(graph) if self.opts["repair"] else graph


class AntispoofFeatures(_GraphEvaluator, Featurizer):
    """The penultimate layer of a real-vs-fake face classifier: features of image realism, not of identity."""

    name = "hm-antispoof"
    version = "1"
    description = ("human-models anti-spoofing CNN (real vs computer-generated faces, 128x128 RGB [0, 1]): "
                   "its 128-D penultimate dense layer as realism features. On 2,000 LFW3D faces the Fréchet distance "
                   "between two halves is 0.004, to blurred 0.021, noised 0.080, JPEG q10 0.007; identity EER 0.42 "
                   "(not an identity embedding)")
    preprocess = Preprocess(128, colour="rgb", value_range="unit")
    files = assets.ANTISPOOF
    outputs = ("StatefulPartitionedCall/sequential/activation_3/Relu", "Identity")  # features, P(real)
    models, input_size = assets.ANTISPOOF.names, preprocess.face_size
    evaluator_role = "when-present"

    def __init__(self, options: Mapping | None, context: PluginContext):
        super().__init__(options, context)
        self._setup(context)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(images)[0]

    def p_real(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) the network's own score that the face is a real photograph."""
        return self.run(images)[1][:, 0]


GENDER_CLASSIFIERS = [FaceresGender, FaceresDeepGender, GearGender, SsrnetGender, MiniXceptionGender]
VERIFIERS = [FaceresVerifier, FaceresDeepVerifier, MobileFaceVerifier, MobileFaceNetVerifier]
FEATURIZERS = [AntispoofFeatures]
for _cls in (*GENDER_CLASSIFIERS, *VERIFIERS, *FEATURIZERS):
    _cls.options = _cls._options()  # each class's own defaults (its pad) in its declared options
