namespace KeyValueLab.Checkpoints;

/// <summary>
/// Pairs a model's parameter names with the names stored in a checkpoint, and reports every
/// disagreement at once. Hugging Face checkpoints name the same weight with or without the base
/// model's prefix (<c>transformer.wte.weight</c> or <c>wte.weight</c>; <c>model.norm.weight</c> or
/// <c>norm.weight</c>), and may carry buffers that are not parameters.
/// </summary>
internal static class StateDictMatcher
{
    /// <summary>Prefixes of a base model inside a *ForCausalLM model (GPT-2 and GPT-J: transformer., Llama: model.).</summary>
    public static readonly IReadOnlyList<string> BasePrefixes = ["transformer.", "model."];

    /// <summary>
    /// Suffixes of stored buffers that are not parameters (GPT-2's causal mask <c>attn.bias</c> and
    /// <c>attn.masked_bias</c>, GPT-NeoX's <c>attention.bias</c> and <c>attention.masked_bias</c>, rotary
    /// <c>inv_freq</c>); ignored when no parameter claims them.
    /// </summary>
    public static readonly IReadOnlyList<string> IgnoredBufferSuffixes = ["attn.bias", "attn.masked_bias", "attention.bias", "attention.masked_bias", "rotary_emb.inv_freq"];

    /// <summary>How many names an error lists per kind of problem before it only counts them.</summary>
    public const int MaxNamesListed = 10;

    /// <summary>
    /// Finds, for each parameter the model expects, the tensor that holds it.
    /// </summary>
    /// <param name="expected">The model's parameter names and shapes. Shapes are as the file stores them
    /// (e.g. GPT-2's Conv1D weights <c>[in, out]</c>), unless the name is in <paramref name="transposed"/>.</param>
    /// <param name="source">The checkpoint.</param>
    /// <param name="optional">Parameters that may be absent, e.g. <c>lm_head.weight</c> when embeddings are tied.
    /// An absent optional parameter is left out of the result.</param>
    /// <param name="transposed">2-D parameters whose expected shape is the transpose of the stored one.</param>
    /// <returns>model name → stored name, for every expected parameter that was found.</returns>
    /// <exception cref="InputException">One line naming the source and listing every missing parameter, every
    /// unexpected stored tensor (buffers excepted), every shape mismatch (expected vs found) and every
    /// unsupported dtype, each list cut at <see cref="MaxNamesListed"/> names with a count.</exception>
    /// <remarks>
    /// Names are compared after removing one leading <see cref="BasePrefixes"/> prefix from both sides,
    /// so a model that calls its parameter <c>transformer.h.0.ln_1.weight</c> finds a stored
    /// <c>h.0.ln_1.weight</c> and vice versa. An exact match always wins over a prefix-stripped one.
    /// </remarks>
    public static IReadOnlyDictionary<string, string> Match(
        IReadOnlyDictionary<string, long[]> expected,
        ITensorSource source,
        IEnumerable<string>? optional = null,
        IEnumerable<string>? transposed = null)
    {
        var optionalSet = new HashSet<string>(optional ?? [], StringComparer.Ordinal);
        var transposedSet = new HashSet<string>(transposed ?? [], StringComparer.Ordinal);
        var stored = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        foreach (var t in source.Tensors) stored[t.Name] = t;

        // Stored tensors by prefix-free name; two stored names that collide (x and model.x) are ambiguous.
        var byCanonical = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var name in stored.Keys)
        {
            string key = Canonical(name);
            if (!byCanonical.TryGetValue(key, out var list)) byCanonical[key] = list = [];
            list.Add(name);
        }

        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<string>();
        var ambiguous = new List<string>();
        var wrongShape = new List<string>();
        var badDtype = new List<string>();

        foreach (var (name, shape) in expected)
        {
            string? found = null;
            if (stored.ContainsKey(name)) found = name;
            else if (byCanonical.TryGetValue(Canonical(name), out var candidates))
            {
                if (candidates.Count == 1) found = candidates[0];
                else { ambiguous.Add($"{name} ({string.Join(" or ", candidates)})"); continue; }
            }
            if (found is null)
            {
                if (!optionalSet.Contains(name)) missing.Add(name);
                continue;
            }
            used.Add(found);
            var info = stored[found];
            long[] want = transposedSet.Contains(name) && shape.Length == 2 ? [shape[1], shape[0]] : shape;
            if (!want.AsSpan().SequenceEqual(info.Shape))
                wrongShape.Add($"{Label(name, found)} expected {Shape(want)} found {Shape(info.Shape)}");
            else if (!SafetensorsDType.IsSupported(info.DType))
                badDtype.Add($"{Label(name, found)} is {info.DType}");
            else
                result[name] = found;
        }

        var unexpected = stored.Keys
            .Where(n => !used.Contains(n) && !IsIgnoredBuffer(n))
            .ToList();

        var problems = new List<string>();
        if (missing.Count > 0) problems.Add($"{missing.Count} missing: {List(missing)}");
        if (unexpected.Count > 0) problems.Add($"{unexpected.Count} unexpected: {List(unexpected)}");
        if (wrongShape.Count > 0) problems.Add($"{wrongShape.Count} wrong shape: {List(wrongShape)}");
        if (badDtype.Count > 0) problems.Add($"{badDtype.Count} unsupported dtype (need F32, F16 or BF16): {List(badDtype)}");
        if (ambiguous.Count > 0) problems.Add($"{ambiguous.Count} ambiguous: {List(ambiguous)}");
        if (problems.Count > 0)
            throw new InputException(source.SourcePath, "checkpoint does not fit the model: " + string.Join("; ", problems));
        return result;
    }

    /// <summary>The name without one leading base-model prefix.</summary>
    public static string Canonical(string name)
    {
        foreach (var prefix in BasePrefixes)
            if (name.StartsWith(prefix, StringComparison.Ordinal)) return name[prefix.Length..];
        return name;
    }

    /// <summary>True for stored buffers that loading ignores (see <see cref="IgnoredBufferSuffixes"/>).</summary>
    public static bool IsIgnoredBuffer(string name) =>
        IgnoredBufferSuffixes.Any(s => name == s || name.EndsWith("." + s, StringComparison.Ordinal));

    private static string Label(string model, string stored) => model == stored ? model : $"{model} (stored as {stored})";

    private static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";

    private static string List(List<string> items)
    {
        string shown = string.Join(", ", items.Take(MaxNamesListed));
        return items.Count > MaxNamesListed ? $"{shown}, … and {items.Count - MaxNamesListed} more" : shown;
    }
}
