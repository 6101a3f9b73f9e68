"""Stage videos -> clips: scene detection and cutting."""
