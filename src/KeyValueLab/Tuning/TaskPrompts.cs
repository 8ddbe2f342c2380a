namespace KeyValueLab.Tuning;

/// <summary>
/// One classification example: the inference <see cref="Prompt"/> and its gold <see cref="Label"/>; the training
/// text is <c>Prompt + Label</c> (no separator), as in the paper's code.
/// </summary>
public sealed record TaskExample(string Task, string Prompt, string Label)
{
    public string TrainingText => Prompt + Label;
}

/// <summary>
/// The paper's prompt templates (qiuzh20/Tuning-keys-v.s.-values, <c>prompts.py</c>, the "_v2" forms) and label sets.
/// </summary>
public static class TaskPrompts
{
    public static readonly string[] Nli3Labels = ["entailment", "contradiction", "neutral"];
    public static readonly string[] Nli2Labels = ["entailment", "not_entailment"];

    public static string Newsgroups(string text) => $"### Sentence:{text} ### Class:";

    public static string BoolQ(string question, string passage) =>
        $"Read the Passage and answer the Question with true or false ### Question:{question} ### Passage: {passage} ### Answer:";

    public static string Copa(string premise, string choice1, string choice2, string question) =>
        $"### Premise:{premise} ### Choice1:{choice1} ### Choice2:{choice2} ### Question:{question} ### Choice:";

    /// <summary>CB and MNLI (three labels).</summary>
    public static string Nli3(string premise, string hypothesis) =>
        $"### Premise:{premise} ### Hypothesis:{hypothesis} ### Relationship (entailment, contradiction or neutral):";

    /// <summary>RTE, QNLI and WNLI (two labels).</summary>
    public static string Nli2(string premise, string hypothesis) =>
        $"### Premise:{premise} ### Hypothesis:{hypothesis} ### Relationship (choose between 'entailment' and 'not entailment'):";

    public static string Race(string article, string question, IReadOnlyList<string> options) =>
        $"Read Context and answer question ### Context:{article} ### Question:{question} ### Options:A.{options[0]}. B.{options[1]}. C.{options[2]}. D.{options[3]}### Choice:";

    public static string CommonsenseQa(string question, IReadOnlyList<string> options) =>
        $"According to the Question, select the best choice among the Options. ### Question:{question} ### Options:A.{options[0]}. B.{options[1]}. C.{options[2]}. D.{options[3]} E.{options[4]} ### Choice:";
}
