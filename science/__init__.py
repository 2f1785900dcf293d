"""science: normalizing-flow samplers (`science.samplers`), GW populations (`science.gw`), PTA model
comparison (`science.pta`), rerandomization (`science.rerandomization`) and MRI reconstruction
(`science.mri`, in progress)."""
