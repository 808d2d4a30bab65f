"""The plugin's pi0_fast. Importing the configuration takes over LeRobot's ``pi0_fast`` type; LeRobot imports
``modeling_pi0_fast`` / ``processor_pi0_fast`` by naming convention when it needs them."""
