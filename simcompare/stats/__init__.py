"""Population statistics: metrics, matching, the classifier test and the verdict."""
