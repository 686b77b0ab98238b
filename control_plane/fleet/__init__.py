"""Fleet: devices, deployments, waved rollouts, signed manifests and the MQTT bridge."""
