"""The workbook's worlds: a bandit (chapter 01), reviews (chapters 02–09), arithmetic (chapter 08)."""
