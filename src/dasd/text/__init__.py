"""Text: reasoning formats, sentence splitting, chat rendering, prompts, harmony, token offsets."""
