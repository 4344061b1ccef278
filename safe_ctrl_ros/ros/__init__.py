"""Glue between the ROS-free core and rclpy: QoS profiles, message conversion, parameters."""
