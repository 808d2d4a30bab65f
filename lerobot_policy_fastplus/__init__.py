import lerobot_fastplus  # noqa: F401  (LeRobot imports this distribution by name to register the plugin)
