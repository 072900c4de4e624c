"""Models behind OpenAI-compatible completion servers (vLLM, SGLang, llama-cpp-python, `nudging serve`)."""
