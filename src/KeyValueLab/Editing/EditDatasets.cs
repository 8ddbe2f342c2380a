using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Editing;

/// <summary>Which object a zsRE edit inserts: ROME/MEMIT use <c>answers[0]</c>, EasyEdit uses <c>alt</c> (SPEC §2).</summary>
public enum ZsreTarget { Answer, Alt }

/// <summary>
/// Loads edit datasets (SPEC §2): CounterFact in ROME's schema or EasyEdit's flat one, and zsRE in MEND's
/// format. The format is detected from the first record. Every record is validated; the first bad one
/// stops the load with an <see cref="InputException"/> naming the file, the record's index and case id and
/// what is wrong (a missing field, an empty target, a subject that does not occur in its prompt).
/// </summary>
public static class EditDatasets
{
    /// <summary>Reads and validates every record of <paramref name="path"/>.</summary>
    public static IReadOnlyList<EditCase> Load(string path, ZsreTarget zsreTarget = ZsreTarget.Answer)
    {
        if (!File.Exists(path)) throw new InputException(path, "no such file");
        var root = InputText.ParseJson(path, InputText.ReadAllText(path));  // strict UTF-8, no key twice
        if (root is not JsonArray records) throw new InputException(path, "expected a JSON array of edit records");
        if (records.Count == 0) throw new InputException(path, "the file holds no records");
        var format = Detect(path, records[0]);
        var cases = new List<EditCase>(records.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < records.Count; i++)
        {
            var reader = new RecordReader(path, i, records[i]);
            var c = format switch
            {
                EditDatasetFormat.CounterFact => ReadCounterFact(reader),
                EditDatasetFormat.CounterFactEasyEdit => ReadEasyEdit(reader),
                _ => ReadZsre(reader, zsreTarget),
            };
            if (!seen.Add(c.CaseId)) throw reader.Error($"duplicate case_id {c.CaseId}");
            cases.Add(c);
        }
        return cases;
    }

    /// <summary>The format of a record, from its fields.</summary>
    public static EditDatasetFormat Detect(string path, JsonNode? first)
    {
        if (first is not JsonObject o) throw new InputException(path, "record 0 is not a JSON object");
        if (o.ContainsKey("requested_rewrite")) return EditDatasetFormat.CounterFact;
        if (o.ContainsKey("rephrase_prompt") || o.ContainsKey("ground_truth")) return EditDatasetFormat.CounterFactEasyEdit;
        if (o.ContainsKey("src") && o.ContainsKey("loc")) return EditDatasetFormat.Zsre;
        throw new InputException(path, "record 0 is neither CounterFact (requested_rewrite), EasyEdit CounterFact (prompt, ground_truth, rephrase_prompt) nor zsRE (src, rephrase, loc)");
    }

    private static EditCase ReadCounterFact(RecordReader r)
    {
        var rewrite = r.Object("requested_rewrite");
        string id = r.Id("case_id");
        string prompt = r.String(rewrite, "requested_rewrite.prompt");
        string subject = r.String(rewrite, "requested_rewrite.subject");
        if (!prompt.Contains("{}", StringComparison.Ordinal)) throw r.Error("requested_rewrite.prompt has no \"{}\" where the subject goes");
        string targetNew = r.String(r.Object(rewrite, "requested_rewrite.target_new"), "requested_rewrite.target_new.str");
        string targetTrue = r.String(r.Object(rewrite, "requested_rewrite.target_true"), "requested_rewrite.target_true.str");
        if (targetNew == targetTrue) throw r.Error($"target_new equals target_true (\"{targetNew}\")");
        var paraphrases = r.Strings("paraphrase_prompts");
        var neighbours = r.Strings("neighborhood_prompts");
        var generation = r.Strings("generation_prompts", optional: true);
        return new EditCase(new EditRequest(id, prompt, subject, targetNew, targetTrue), EditDatasetFormat.CounterFact,
            paraphrases, neighbours, generation, [.. neighbours.Select(p => new PromptTarget(p, targetTrue))]);
    }

    private static EditCase ReadEasyEdit(RecordReader r)
    {
        string id = r.Id("case_id");
        string prompt = r.String("prompt"), subject = r.String("subject");
        string targetNew = r.String("target_new"), truth = r.String("ground_truth");
        string rephrase = r.String("rephrase_prompt");
        string locality = r.String("locality_prompt"), localityTruth = r.String("locality_ground_truth");
        return new EditCase(new EditRequest(id, Template(r, prompt, subject, "prompt"), subject, targetNew, truth), EditDatasetFormat.CounterFactEasyEdit,
            [rephrase], [locality], [], [new PromptTarget(locality, localityTruth)]);
    }

    private static EditCase ReadZsre(RecordReader r, ZsreTarget target)
    {
        string id = r.Node["case_id"] is null ? r.Index.ToString(System.Globalization.CultureInfo.InvariantCulture) : r.Id("case_id");
        string subject = r.String("subject"), src = r.String("src"), rephrase = r.String("rephrase");
        string loc = r.String("loc"), locAnswer = r.String("loc_ans");
        string targetNew = target == ZsreTarget.Alt ? r.String("alt") : r.Strings("answers")[0];
        return new EditCase(new EditRequest(id, Template(r, src, subject, "src"), subject, targetNew, null), EditDatasetFormat.Zsre,
            [rephrase], [], [], [new PromptTarget(loc, locAnswer)]);
    }

    /// <summary>The prompt with the subject's first occurrence replaced by "{}" (the subject must occur in it).</summary>
    private static string Template(RecordReader r, string prompt, string subject, string field)
    {
        int at = prompt.IndexOf(subject, StringComparison.Ordinal);
        if (at < 0) throw r.Error($"subject \"{subject}\" does not occur in {field} \"{prompt}\"");
        return string.Concat(prompt.AsSpan(0, at), "{}", prompt.AsSpan(at + subject.Length));
    }

    /// <summary>Typed access to one record's fields; every failure names the file and the record.</summary>
    private sealed class RecordReader
    {
        private readonly string _path;
        private string? _id;

        public RecordReader(string path, int index, JsonNode? node)
        {
            (_path, Index) = (path, index);
            Node = node as JsonObject ?? throw new InputException(path, $"record {index} is not a JSON object");
        }

        public int Index { get; }
        public JsonObject Node { get; }

        public InputException Error(string problem) =>
            new(_path, $"record {Index}{(_id is null ? "" : $" (case_id {_id})")}: {problem}");

        public string Id(string name)
        {
            var node = Node[name] ?? throw Error($"missing field \"{name}\"");
            _id = node.GetValueKind() switch
            {
                JsonValueKind.Number or JsonValueKind.String => node.ToString(),
                _ => throw Error($"field \"{name}\" must be a number or a string"),
            };
            if (_id.Length == 0) throw Error($"field \"{name}\" is empty");
            return _id;
        }

        public JsonObject Object(string name) => Object(Node, name);

        public JsonObject Object(JsonObject parent, string dotted) =>
            parent[Leaf(dotted)] switch
            {
                JsonObject o => o,
                null => throw Error($"missing field \"{dotted}\""),
                _ => throw Error($"field \"{dotted}\" must be an object"),
            };

        public string String(string name) => String(Node, name);

        public string String(JsonObject parent, string dotted)
        {
            var node = parent[Leaf(dotted)] ?? throw Error($"missing field \"{dotted}\"");
            if (node.GetValueKind() != JsonValueKind.String) throw Error($"field \"{dotted}\" must be a string");
            string s = node.GetValue<string>();
            return string.IsNullOrWhiteSpace(s) ? throw Error($"field \"{dotted}\" is empty") : s;
        }

        public IReadOnlyList<string> Strings(string name, bool optional = false)
        {
            var node = Node[name];
            if (node is null) return optional ? [] : throw Error($"missing field \"{name}\"");
            if (node is not JsonArray array) throw Error($"field \"{name}\" must be an array of strings");
            if (array.Count == 0 && !optional) throw Error($"field \"{name}\" is empty");
            var list = new List<string>(array.Count);
            for (int i = 0; i < array.Count; i++)
            {
                if (array[i] is not JsonValue v || v.GetValueKind() != JsonValueKind.String || string.IsNullOrWhiteSpace(v.GetValue<string>()))
                    throw Error($"{name}[{i}] must be a non-empty string");
                list.Add(v.GetValue<string>());
            }
            return list;
        }

        private static string Leaf(string dotted) => dotted[(dotted.LastIndexOf('.') + 1)..];
    }
}
