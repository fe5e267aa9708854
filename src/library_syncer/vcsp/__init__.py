"""The VMware Content Library (VCSP) format: model, folder scan and manifest update rules."""
