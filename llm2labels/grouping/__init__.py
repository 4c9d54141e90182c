"""Stage 2: from the ranked candidate list to a vocabulary of synsets and a hierarchy."""
