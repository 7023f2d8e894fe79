"""History: shard engines that apply commands to runs with group commit, and the command bus."""
