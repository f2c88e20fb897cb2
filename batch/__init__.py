"""`internvl-batch`: run an OpenAI Batch API JSONL file (or a folder of media and one
prompt) against an OpenAI-compatible server, resumably and exactly once per custom_id."""
