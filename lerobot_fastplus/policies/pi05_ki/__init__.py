"""pi05_ki: pi0.5 with Knowledge Insulation. Importing the configuration registers the ``pi05_ki`` type;
LeRobot imports ``modeling_pi05_ki`` / ``processor_pi05_ki`` by naming convention when it needs them."""
