"""science: normalizing-flow samplers (`science.samplers`); GW, PTA, rerandomization and MRI to come."""
