using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Tuning;

/// <summary>A task's training and evaluation examples after splitting, capping and shuffling.</summary>
public sealed record TaskData(string Name, IReadOnlyList<string> Labels, IReadOnlyList<TaskExample> Train, IReadOnlyList<TaskExample> Eval, string SplitNote);

/// <summary>How examples are selected: the paper's caps (5,000 training, 1,000 evaluation examples per task).</summary>
public sealed record TaskSelection
{
    public int MaxTrain { get; init; } = 5000;
    public int MaxEval { get; init; } = 1000;

    /// <summary>Shuffle the training examples with <see cref="Seed"/> before capping. The paper's code did NOT shuffle (it took the first rows).</summary>
    public bool Shuffle { get; init; } = true;
    public int Seed { get; init; } = 42;

    /// <summary>When a task has one labelled file, this fraction of it (at most <see cref="MaxEval"/>) is held out for evaluation.</summary>
    public double HeldOutFraction { get; init; } = 0.2;
}

/// <summary>
/// Reads classification tasks in the formats their public releases ship: SuperGLUE JSONL (BoolQ, COPA, CB, RTE),
/// GLUE TSV with a header (RTE, QNLI, WNLI, MNLI), RACE JSON (one article with parallel <c>questions</c>/<c>options</c>/<c>answers</c>,
/// or one question per row as on the Hugging Face hub), CommonsenseQA JSONL (<c>question.stem</c>/<c>question.choices</c>/<c>answerKey</c>,
/// or the hub's flat form), 20 Newsgroups JSONL (<c>text</c>, <c>label</c>), and any JSONL with <c>prompt</c> and <c>label</c>
/// (task name <c>generic</c>, used as is). Every malformed row is an <see cref="InputException"/> naming file and line.
/// </summary>
public static class TaskLoader
{
    public static IReadOnlyList<string> Known { get; } =
        ["boolq", "copa", "cb", "rte", "qnli", "wnli", "mnli", "race", "commonsenseqa", "20newsgroups", "generic"];

    private static readonly string[] TrainFiles = ["train.jsonl", "train.json", "train.tsv"];
    private static readonly string[] EvalFiles = ["val.jsonl", "validation.jsonl", "dev.jsonl", "val.json", "validation.json", "dev.json",
        "dev.tsv", "dev_mismatched.tsv", "validation_mismatched.jsonl", "dev_matched.tsv", "test.jsonl"];

    /// <summary>Canonical task name: lower case; "csqa" and "commonsense_qa" → commonsenseqa, "20ng"/"newsgroups" → 20newsgroups, "race-high" → race.</summary>
    public static string Canonical(string name)
    {
        string n = name.Trim().ToLowerInvariant();
        n = n switch
        {
            "csqa" or "commonsense_qa" => "commonsenseqa",
            "20ng" or "newsgroups" or "20_newsgroups" => "20newsgroups",
            "race-high" or "race_high" or "race-middle" or "race_middle" => "race",
            _ => n,
        };
        return Known.Contains(n) ? n : throw new ArgumentException($"unknown task \"{name}\" (known: {string.Join(", ", Known)})");
    }

    /// <summary>The label set of a task (for generic tasks: the labels found in its files).</summary>
    public static IReadOnlyList<string> LabelsOf(string task) => Canonical(task) switch
    {
        "boolq" => ["true", "false"],
        "copa" => ["Choice1", "Choice2"],
        "cb" or "mnli" => TaskPrompts.Nli3Labels,
        "rte" or "qnli" or "wnli" => TaskPrompts.Nli2Labels,
        "race" => ["A", "B", "C", "D"],
        "commonsenseqa" => ["A", "B", "C", "D", "E"],
        _ => [],
    };

    /// <summary>
    /// Loads task <paramref name="task"/> from <paramref name="path"/>: a folder with a training file (train.jsonl/.json/.tsv) and an
    /// evaluation file (val/validation/dev, MNLI: dev_mismatched as in the paper), or one file. With only one labelled file, a
    /// fixed-seed held-out part becomes the evaluation set. The evaluation set is the first <see cref="TaskSelection.MaxEval"/> rows.
    /// </summary>
    public static TaskData Load(string task, string path, TaskSelection? selection = null)
    {
        selection ??= new TaskSelection();
        task = Canonical(task);
        string? trainFile = null, evalFile = null;
        if (Directory.Exists(path))
        {
            trainFile = TrainFiles.Select(f => Path.Combine(path, f)).FirstOrDefault(File.Exists);
            evalFile = EvalFiles.Select(f => Path.Combine(path, f)).FirstOrDefault(File.Exists);
            if (trainFile is null && evalFile is null)
                throw new InputException(path, $"no task file found (looked for {string.Join(", ", TrainFiles.Concat(EvalFiles))})");
        }
        else if (File.Exists(path)) trainFile = path;
        else throw new InputException(path, "no such task file or folder");

        List<TaskExample> train, eval;
        string note;
        if (trainFile is not null && evalFile is not null)
        {
            train = ReadFile(task, trainFile);
            eval = ReadFile(task, evalFile);
            note = $"train={Path.GetFileName(trainFile)} eval={Path.GetFileName(evalFile)}";
        }
        else
        {
            string only = trainFile ?? evalFile!;
            var all = ReadFile(task, only);
            int held = Math.Min(selection.MaxEval, Math.Max(1, (int)Math.Ceiling(all.Count * selection.HeldOutFraction)));
            if (all.Count < 2) throw new InputException(only, "a single task file needs at least 2 examples to split");
            var order = Permutation(all.Count, seed: 1234);
            var heldSet = order.Take(held).ToHashSet();
            eval = [.. Enumerable.Range(0, all.Count).Where(heldSet.Contains).Select(i => all[i])];
            train = [.. Enumerable.Range(0, all.Count).Where(i => !heldSet.Contains(i)).Select(i => all[i])];
            note = $"{Path.GetFileName(only)} split {train.Count}/{eval.Count} (fixed seed 1234)";
        }
        if (selection.Shuffle) train = [.. Permutation(train.Count, selection.Seed).Select(i => train[i])];
        train = [.. train.Take(selection.MaxTrain)];
        eval = [.. eval.Take(selection.MaxEval)];
        var labels = LabelsOf(task);
        if (labels.Count == 0) labels = [.. train.Concat(eval).Select(e => e.Label).Distinct().Order(StringComparer.Ordinal)];
        return new TaskData(task, labels, train, eval, note);
    }

    /// <summary>A seeded Fisher–Yates permutation of 0..n-1 (System.Random with a seed is stable across .NET versions).</summary>
    public static int[] Permutation(int n, int seed)
    {
        var order = Enumerable.Range(0, n).ToArray();
        new Random(seed).Shuffle(order);
        return order;
    }

    /// <summary>Reads every labelled example of one file (JSONL/JSON or TSV).</summary>
    public static List<TaskExample> ReadFile(string task, string path)
    {
        task = Canonical(task);
        if (!File.Exists(path)) throw new InputException(path, "no such file");
        var examples = path.EndsWith(".tsv", StringComparison.OrdinalIgnoreCase) ? ReadTsv(task, path) : ReadJson(task, path);
        if (examples.Count == 0) throw new InputException(path, $"no labelled {task} examples in this file");
        return examples;
    }

    private static List<TaskExample> ReadJson(string task, string path)
    {
        var examples = new List<TaskExample>();
        string text = InputText.ReadAllText(path);  // strict UTF-8
        var trimmed = text.TrimStart();
        // A whole-file JSON array or object (RACE ships one article per .json file); else JSON lines.
        if (trimmed.StartsWith('[') || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            var root = InputText.ParseJson(path, text);
            var rows = root is JsonArray arr ? arr.ToList() : [root];
            for (int i = 0; i < rows.Count; i++)
                examples.AddRange(FromRow(task, rows[i] as JsonObject ?? throw new InputException(path, $"item {i + 1}: expected a JSON object"), path, $"item {i + 1}"));
            return examples;
        }
        int line = 0;
        foreach (string raw in text.ReplaceLineEndings("\n").Split('\n'))
        {
            line++;
            if (string.IsNullOrWhiteSpace(raw)) continue;
            var node = InputText.ParseJson(path, raw, $"line {line}");
            examples.AddRange(FromRow(task, node as JsonObject ?? throw new InputException(path, $"line {line}: expected a JSON object"), path, $"line {line}"));
        }
        return examples;
    }

    private static IEnumerable<TaskExample> FromRow(string task, JsonObject row, string path, string where)
    {
        string Str(string key) => row[key] is JsonValue v && v.TryGetValue(out string? s) ? s
            : throw new InputException(path, $"{where}: missing text field \"{key}\"");
        bool HasLabel() => row.ContainsKey("label") && row["label"] is not null && !(row["label"] is JsonValue v && v.TryGetValue(out int i) && i == -1);
        InputException Bad(string what) => new(path, $"{where}: {what}");

        switch (task)
        {
            case "boolq":
                if (!HasLabel()) yield break;  // unlabelled test rows
                bool answer = row["label"] is JsonValue bv && bv.TryGetValue(out bool b) ? b
                    : row["label"] is JsonValue iv && iv.TryGetValue(out int bi) && bi is 0 or 1 ? bi == 1
                    : row["label"] is JsonValue bsv && bsv.TryGetValue(out string? bs) && bs is "true" or "false" ? bs == "true"
                    : throw Bad("\"label\" must be true/false or 1/0");
                yield return new(task, TaskPrompts.BoolQ(Str("question"), Str("passage")), answer ? "true" : "false");
                break;
            case "copa":
                if (!HasLabel()) yield break;
                int choice = row["label"] is JsonValue cv && cv.TryGetValue(out int c) && c is 0 or 1 ? c : throw Bad("\"label\" must be 0 or 1");
                string premise = Str("premise"), copaQuestion = Str("question");
                // SuperGLUE COPA asks for the cause or the effect; anything else would silently get the effect's prompt.
                if (copaQuestion is not ("cause" or "effect")) throw Bad($"\"question\" must be cause or effect, not \"{copaQuestion}\"");
                if (string.IsNullOrWhiteSpace(premise)) throw Bad("\"premise\" is empty");
                yield return new(task, TaskPrompts.Copa(premise, Str("choice1"), Str("choice2"), copaQuestion), choice == 0 ? "Choice1" : "Choice2");
                break;
            case "cb" or "rte":
                if (!HasLabel()) yield break;
                string[] labels = task == "cb" ? TaskPrompts.Nli3Labels : TaskPrompts.Nli2Labels;
                string label = NliLabel(row["label"], labels, task) ?? throw Bad($"\"label\" must be one of {string.Join("/", labels)}");
                yield return new(task, task == "cb" ? TaskPrompts.Nli3(Str("premise"), Str("hypothesis")) : TaskPrompts.Nli2(Str("premise"), Str("hypothesis")), label);
                break;
            case "qnli" or "wnli" or "mnli":
                throw Bad($"{task} is read from the GLUE .tsv release");
            case "race":
                if (row["questions"] is JsonArray questions)
                {
                    var options = row["options"] as JsonArray ?? throw Bad("missing \"options\"");
                    var answers = row["answers"] as JsonArray ?? throw Bad("missing \"answers\"");
                    if (options.Count != questions.Count || answers.Count != questions.Count) throw Bad("\"questions\", \"options\" and \"answers\" differ in length");
                    string article = Str("article");
                    for (int q = 0; q < questions.Count; q++)
                        yield return RaceExample(article, (string?)questions[q] ?? throw Bad($"question {q} is not text"), options[q], (string?)answers[q], Bad);
                }
                else yield return RaceExample(Str("article"), Str("question"), row["options"], row["answer"] is JsonValue av ? (string?)av : null, Bad);
                break;
            case "commonsenseqa":
                string key = row["answerKey"] is JsonValue kv && kv.TryGetValue(out string? k) ? k : throw Bad("missing \"answerKey\"");
                string stem; List<string> texts;
                if (row["question"] is JsonObject question)
                {
                    stem = question["stem"] is JsonValue sv && sv.TryGetValue(out string? s) ? s : throw Bad("missing \"question.stem\"");
                    texts = (question["choices"] as JsonArray ?? throw Bad("missing \"question.choices\""))
                        .Select(ch => ch?["text"] is JsonValue tv && tv.TryGetValue(out string? t) ? t : throw Bad("a choice has no \"text\"")).ToList();
                }
                else
                {
                    stem = Str("question");
                    texts = (row["choices"]?["text"] as JsonArray ?? throw Bad("missing \"choices.text\"")).Select(t => (string?)t ?? "").ToList();
                }
                if (texts.Count > 5) throw Bad("more than 5 choices");
                while (texts.Count < 5) texts.Add("");
                if (key is not ("A" or "B" or "C" or "D" or "E")) throw Bad($"answerKey \"{key}\" is not A–E");
                yield return new(task, TaskPrompts.CommonsenseQa(stem, texts), key);
                break;
            case "20newsgroups":
                if (row["label"] is not JsonValue lv || !lv.TryGetValue(out string? cls)) throw Bad("\"label\" must be the class name (text)");
                yield return new(task, TaskPrompts.Newsgroups(Str("text")), cls);
                break;
            default:  // generic
                string prompt = Str("prompt");
                string gold = row["label"] is JsonValue gv && gv.TryGetValue(out string? g) ? g
                    : row["answer"] is JsonValue av2 && av2.TryGetValue(out string? g2) ? g2
                    : throw Bad("missing text field \"label\" (or \"answer\")");
                yield return new(task, prompt, gold);
                break;
        }
    }

    private static TaskExample RaceExample(string article, string question, JsonNode? optionsNode, string? answer, Func<string, InputException> bad)
    {
        var options = (optionsNode as JsonArray ?? throw bad("missing \"options\"")).Select(o => (string?)o ?? "").ToList();
        if (options.Count > 4) throw bad("more than 4 options");
        while (options.Count < 4) options.Add("");
        if (answer is not ("A" or "B" or "C" or "D")) throw bad($"answer \"{answer}\" is not A–D");
        return new("race", TaskPrompts.Race(article, question, options), answer);
    }

    private static string? NliLabel(JsonNode? node, string[] labels, string task)
    {
        if (node is not JsonValue v) return null;
        if (v.TryGetValue(out string? s)) return labels.Contains(s) ? s : null;
        if (v.TryGetValue(out int i) && i >= 0 && i < labels.Length) return labels[i];  // Hugging Face int ids in the same order
        return null;
    }

    private static List<TaskExample> ReadTsv(string task, string path)
    {
        using var reader = new StringReader(InputText.ReadAllText(path));  // strict UTF-8
        string header = reader.ReadLine() ?? throw new InputException(path, "empty file (expected a GLUE header line)");
        var columns = header.Split('\t');
        int Col(params string[] names)
        {
            foreach (string n in names)
            {
                int i = Array.IndexOf(columns, n);
                if (i >= 0) return i;
            }
            throw new InputException(path, $"line 1: no column {string.Join(" or ", names)} in the header ({string.Join(", ", columns)})");
        }
        (int a, int b, string[] labels, string[] labelNames) = task switch
        {
            "rte" => (Col("sentence1"), Col("sentence2"), TaskPrompts.Nli2Labels, TaskPrompts.Nli2Labels),
            "qnli" => (Col("question"), Col("sentence"), TaskPrompts.Nli2Labels, TaskPrompts.Nli2Labels),
            // GLUE WNLI: 1 = entailment, 0 = not_entailment.
            "wnli" => (Col("sentence1"), Col("sentence2"), TaskPrompts.Nli2Labels, new[] { "1", "0" }),
            "mnli" => (Col("sentence1"), Col("sentence2"), TaskPrompts.Nli3Labels, TaskPrompts.Nli3Labels),
            _ => throw new InputException(path, $"{task} is not read from .tsv files (JSONL/JSON expected)"),
        };
        int? labelCol = columns.Contains("gold_label") ? Array.IndexOf(columns, "gold_label")
            : columns.Contains("label") ? Array.IndexOf(columns, "label") : null;
        if (labelCol is null) return [];  // an unlabelled test file
        var examples = new List<TaskExample>();
        int line = 1;
        string? raw;
        while ((raw = reader.ReadLine()) is not null)
        {
            line++;
            if (raw.Length == 0) continue;
            var cells = raw.Split('\t');
            if (cells.Length < columns.Length && cells.Length <= Math.Max(Math.Max(a, b), labelCol.Value))
                throw new InputException(path, $"line {line}: {cells.Length} tab-separated cells, the header has {columns.Length}");
            string gold = cells[labelCol.Value].Trim();
            int index = Array.IndexOf(labelNames, gold);
            if (index < 0) throw new InputException(path, $"line {line}: label \"{gold}\" is not one of {string.Join("/", labelNames)}");
            string premise = cells[a], hypothesis = cells[b];
            examples.Add(new(task, task == "mnli" ? TaskPrompts.Nli3(premise, hypothesis) : TaskPrompts.Nli2(premise, hypothesis), labels[index]));
        }
        return examples;
    }
}
