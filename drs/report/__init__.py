"""The PDF report on the deployed model: facts read once, its sections, its charts."""
