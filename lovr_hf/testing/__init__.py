"""Loopback stand-ins of the services lovr_hf talks to, for tests and offline runs: an OpenAI-compatible HTTP
server (:mod:`lovr_hf.testing.fake_openai`, its request rules in :mod:`lovr_hf.testing.openai_rules`) and a
Hugging Face Hub (:mod:`lovr_hf.testing.fake_hub`). Import them from their modules; the in-process ChatLLM
stand-ins are backends (:mod:`lovr_hf.backends.standins.chat_llms`)."""
