"""Stage clips -> clip_captions: a vision-language model captions every clip."""
