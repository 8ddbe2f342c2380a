using KeyValueLab.Tokenization;

namespace KeyValueLab.Organism;

/// <summary>
/// The organism's word-level vocabulary: special tokens, then every word of the world (subjects, objects,
/// phrasings, task templates) and of <see cref="TemplateWords"/>, in ordinal order. Each subject and each
/// object is one token, so top-1 recall is exact and " Paris" and "Paris" are the same token.
/// </summary>
public static class OrganismTokenizer
{
    public const string Unknown = "<unk>";
    public const string Bos = "<s>";
    public const string Eos = "</s>";

    /// <summary>Builds the vocabulary of <paramref name="world"/>.</summary>
    public static WordLevelTokenizer Build(World world)
    {
        ArgumentNullException.ThrowIfNull(world);
        var words = new SortedSet<string>(StringComparer.Ordinal);
        void Add(string text) { foreach (var w in WordLevelTokenizer.Split(text)) words.Add(w); }
        foreach (var s in world.Subjects) Add(s);
        foreach (var r in world.Relations)
        {
            foreach (var o in r.Objects) Add(o);
            foreach (var t in r.Definition.Statements.Concat(r.Definition.Questions)) Add(t);
        }
        foreach (var t in world.TemplateTexts()) Add(t);
        return new WordLevelTokenizer([Unknown, Bos, Eos, .. words], Unknown, Bos, Eos);
    }

    /// <summary>The <c>tokenizer_config.json</c> that names the special tokens for <see cref="TokenizerLoader"/> and Hugging Face.</summary>
    public static string TokenizerConfigJson() =>
        $$"""
        {
          "tokenizer_class": "PreTrainedTokenizerFast",
          "bos_token": "{{Bos}}",
          "eos_token": "{{Eos}}",
          "unk_token": "{{Unknown}}",
          "pad_token": "{{Eos}}",
          "model_max_length": 1024
        }

        """.ReplaceLineEndings("\n");
}
