"""science: normalizing-flow samplers (`science.samplers`), GW populations (`science.gw`), PTA model
comparison (`science.pta`) and rerandomization (`science.rerandomization`); MRI to come."""
