"""Sweeps: many seeded runs of a launch file (graph) or of its ROS-free core, on Ray."""
