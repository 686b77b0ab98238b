"""The ops assistant: a LangGraph thread that answers from read tools and runbooks, and can only propose."""
