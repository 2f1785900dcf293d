"""science: normalizing-flow samplers (`science.samplers`), GW populations (`science.gw`), PTA model
comparison (`science.pta`), rerandomization (`science.rerandomization`) and MRI reconstruction
(`science.mri`). Each subpackage states its own public API; nothing is imported here, so
``import science.pta`` loads no other area."""

__all__ = ["samplers", "gw", "pta", "rerandomization", "mri"]
