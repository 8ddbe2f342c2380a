namespace KeyValueLab.Organism;

/// <summary>
/// Words that the organism's vocabulary holds besides the world's own: the paper's classification prompt
/// templates (SPEC §1: "### Question:", "### Choice:", labels …) and the fixed words of the exports
/// ("nq question:"), so fine-tuning prompts for the organism's tasks tokenise without unknown tokens.
/// </summary>
internal static class TemplateWords
{
    /// <summary>Texts whose words are added to the vocabulary.</summary>
    public static IReadOnlyList<string> Texts { get; } =
    [
        "Read the Passage and answer the Question with true or false ### Question: ### Passage: ### Answer: true false",
        "### Premise: ### Choice1: ### Choice2: ### Question: ### Choice: Choice1 Choice2 cause effect",
        "### Hypothesis: ### Label: ### Sentence: ### Class: ### Options: ### Context: ### Answer:",
        "entailment contradiction neutral not_entailment A B C D E yes no Yes No True False",
        "nq question: ? . , ; ' \" ( ) - !",
        "0 1 2 3 4 5 6 7 8 9",
        // The templates themselves, so that words such as "Relationship" and "):" (one pre-token) are not unknown tokens.
        Tuning.TaskPrompts.BoolQ("", ""), Tuning.TaskPrompts.Copa("", "", "", ""), Tuning.TaskPrompts.Nli3("", ""),
        Tuning.TaskPrompts.Nli2("", ""), Tuning.TaskPrompts.Newsgroups(""),
    ];

    /// <summary>All words of <see cref="Texts"/>, as the tokenizer splits them.</summary>
    public static IEnumerable<string> All => Texts.SelectMany(Tokenization.WordLevelTokenizer.Split);
}
