"""The chat ops assistant's API: threads owned by their creator, answers streamed as Server-Sent Events."""
