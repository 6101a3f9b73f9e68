"""Chat LLMs that merge captions."""

#: the original merge script's model (GPT-4o through the OpenAI API): the one definition of the default
DEFAULT_API_MODEL = "gpt-4o"
