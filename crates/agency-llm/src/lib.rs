//! The generated-fix tier: an OpenAI-compatible Chat Completions client.
