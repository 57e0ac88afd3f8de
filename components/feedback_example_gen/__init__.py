"""FeedbackExampleGen: served predictions + posted labels -> the pipeline's next ``Examples``."""
