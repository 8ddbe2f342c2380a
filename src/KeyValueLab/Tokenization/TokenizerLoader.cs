using System.Text.Json;

namespace KeyValueLab.Tokenization;

/// <summary>Opens whichever tokenizer a file or model folder holds.</summary>
public static class TokenizerLoader
{
    /// <summary>
    /// The tokenizer of a model: <paramref name="tokenizerPath"/> when given, else the model folder's, else
    /// <c>tokenizer.bin</c> beside a llama2.c file. <paramref name="howToGive"/> ends the error when there is none
    /// (e.g. "pass --tokenizer PATH"). With <paramref name="modelVocabSize"/>, a tokenizer whose ids reach past the
    /// model's embedding rows is refused here, before any id is looked up.
    /// </summary>
    /// <exception cref="InputException">No tokenizer, a malformed one, or one with more ids than the model embeds (both named).</exception>
    public static ITokenizer ForModel(string modelPath, string? tokenizerPath, string howToGive, int? modelVocabSize = null)
    {
        string source = !string.IsNullOrEmpty(tokenizerPath) ? tokenizerPath
            : Directory.Exists(modelPath) || modelPath.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? modelPath
            : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath)) ?? ".", "tokenizer.bin");
        if (string.IsNullOrEmpty(tokenizerPath) && source != modelPath && !File.Exists(source))
            throw new InputException(modelPath, $"no tokenizer given and no tokenizer.bin beside this llama2.c file; {howToGive}");
        var tokenizer = Load(source);
        if (modelVocabSize is int rows && tokenizer.VocabSize > rows)
            throw new InputException(source, $"the tokenizer has ids up to {tokenizer.VocabSize - 1} but the model {modelPath} embeds only {rows} tokens (vocab_size {rows}); they do not belong together");
        return tokenizer;
    }

    /// <summary>
    /// Loads a tokenizer from a folder or a file.
    /// A folder is searched for, in order: <c>tokenizer.json</c> (byte-level BPE or word-level; a SentencePiece-style
    /// <c>tokenizer.json</c> is passed over when <c>tokenizer.model</c> is beside it), <c>vocab.json</c> +
    /// <c>merges.txt</c>, <c>tokenizer.model</c>, <c>tokenizer.bin</c>. A file is read by its extension:
    /// <c>.json</c> (<c>tokenizer.json</c>, or <c>vocab.json</c> with <c>merges.txt</c> beside it),
    /// <c>.txt</c> (merges, with <c>vocab.json</c> beside it), <c>.model</c> (SentencePiece), <c>.bin</c> (llama2.c).
    /// For GPT-2 style files, BOS/EOS/unknown tokens come from <c>tokenizer_config.json</c> beside them when present.
    /// </summary>
    /// <exception cref="InputException">Nothing loadable there, or the file is malformed.</exception>
    public static ITokenizer Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path)) return LoadFolder(path);
        if (!File.Exists(path)) throw new InputException(path, "no such file or folder");

        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string name = Path.GetFileName(path);
        switch (Path.GetExtension(path).ToLowerInvariant())
        {
            case ".model":
                return LoadModelFile(path);
            case ".bin":
                return Llama2cTokenizer.FromFile(path);
            case ".gguf":
                return GgufVocabulary.Read(Checkpoints.GgufFile.Open(path)).ToTokenizer(path);
            case ".txt":
                return LoadVocabAndMerges(Beside(path, "vocab.json"), path);
            case ".json" when name.Equals("vocab.json", StringComparison.OrdinalIgnoreCase):
                return LoadVocabAndMerges(path, Beside(path, "merges.txt"));
            case ".json":
                var (bos, eos, unk, _, _) = ReadTokenizerConfig(folder);
                if (WordLevelTokenizer.IsWordLevelJson(path)) return WordLevelTokenizer.FromTokenizerJson(path, bos, eos);
                return Gpt2Tokenizer.FromTokenizerJson(path, bos, eos, unk);
            default:
                throw new InputException(path, "unknown tokenizer file type (expected tokenizer.json, vocab.json, merges.txt, tokenizer.model, a llama2.c .bin or a .gguf)");
        }
    }

    private static ITokenizer LoadFolder(string folder)
    {
        string json = Path.Combine(folder, "tokenizer.json");
        string vocab = Path.Combine(folder, "vocab.json");
        string merges = Path.Combine(folder, "merges.txt");
        string model = Path.Combine(folder, "tokenizer.model");
        string bin = Path.Combine(folder, "tokenizer.bin");

        if (File.Exists(json))
        {
            var (bos, eos, unk, _, _) = ReadTokenizerConfig(folder);
            if (WordLevelTokenizer.IsWordLevelJson(json)) return WordLevelTokenizer.FromTokenizerJson(json, bos, eos);
            try { return Gpt2Tokenizer.FromTokenizerJson(json, bos, eos, unk); }
            // Llama folders ship a SentencePiece-style tokenizer.json beside tokenizer.model: use the model.
            catch (InputException) when (File.Exists(model)) { return LoadModelFile(model); }
        }
        if (File.Exists(vocab) || File.Exists(merges))
        {
            if (File.Exists(vocab) && File.Exists(merges)) return LoadVocabAndMerges(vocab, merges);
            if (!File.Exists(model)) throw new InputException(File.Exists(vocab) ? merges : vocab, "missing (vocab.json and merges.txt go together)");
        }
        if (File.Exists(model)) return LoadModelFile(model);
        if (File.Exists(bin)) return Llama2cTokenizer.FromFile(bin);
        throw new InputException(folder, "no tokenizer found (looked for tokenizer.json, vocab.json + merges.txt, tokenizer.model, tokenizer.bin)");
    }

    private static Gpt2Tokenizer LoadVocabAndMerges(string vocab, string merges)
    {
        foreach (var f in new[] { vocab, merges })
            if (!File.Exists(f)) throw new InputException(f, "missing (vocab.json and merges.txt go together)");
        var (bos, eos, unk, added, tokenizerClass) = ReadTokenizerConfig(Path.GetDirectoryName(Path.GetFullPath(vocab))!);
        // Qwen2Tokenizer (transformers tokenization_qwen2.py): its own split regex, text NFC-normalised first.
        bool qwen2 = tokenizerClass is "Qwen2Tokenizer" or "Qwen2TokenizerFast";
        return Gpt2Tokenizer.FromFiles(vocab, merges, bos, eos, unk,
            qwen2 ? Gpt2Tokenizer.Qwen2Pattern : Gpt2Tokenizer.Gpt2Pattern, nfc: qwen2, added);
    }

    /// <summary>
    /// A <c>tokenizer.model</c>: Meta's tiktoken text format (Llama 3; special tokens and BOS/EOS from
    /// <c>tokenizer_config.json</c> beside it), else a SentencePiece protobuf (Llama 1/2, Gemma).
    /// </summary>
    private static ITokenizer LoadModelFile(string path)
    {
        if (!TiktokenFile.Looks(path)) return SentencePieceTokenizer.FromFile(path);
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string config = Path.Combine(folder, "tokenizer_config.json");
        if (!File.Exists(config))
            throw new InputException(path, "tiktoken-format tokenizer.model needs tokenizer_config.json beside it (its added_tokens_decoder holds the special tokens)");
        var (bos, eos, _, added, _) = ReadTokenizerConfig(folder);
        return Gpt2Tokenizer.FromTiktoken(path, added, bos, eos);
    }

    private static string Beside(string file, string name) => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file))!, name);

    /// <summary>
    /// bos_token, eos_token and unk_token from a Hugging Face tokenizer_config.json, else GPT-2's defaults; its
    /// added_tokens_decoder (content → id) and tokenizer_class.
    /// </summary>
    private static (string? Bos, string? Eos, string? Unk, Dictionary<string, int> Added, string? TokenizerClass) ReadTokenizerConfig(string folder)
    {
        const string d = Gpt2Tokenizer.EndOfText;
        string config = Path.Combine(folder, "tokenizer_config.json");
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (!File.Exists(config)) return (d, d, d, added, null);
        try
        {
            using var doc = JsonDocument.Parse(Utf8Text.ReadBytes(config));
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InputException(config, "expected a JSON object");
            string? Token(string key)
            {
                if (!root.TryGetProperty(key, out var v)) return d;
                return v.ValueKind switch
                {
                    JsonValueKind.String => v.GetString(),
                    JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                    JsonValueKind.Null => null,
                    _ => throw new InputException(config, $"{key}: expected a string, {{\"content\": ...}} or null"),
                };
            }
            if (root.TryGetProperty("added_tokens_decoder", out var decoder))
            {
                if (decoder.ValueKind != JsonValueKind.Object) throw new InputException(config, "added_tokens_decoder: expected an object mapping id → token");
                foreach (var p in decoder.EnumerateObject())
                {
                    if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, null, out int id)
                        || p.Value.ValueKind != JsonValueKind.Object
                        || !p.Value.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String || c.GetString()!.Length == 0)
                        throw new InputException(config, $"added_tokens_decoder[\"{p.Name}\"]: expected a non-negative id and {{\"content\": non-empty string, ...}}");
                    foreach (var flag in new[] { "lstrip", "rstrip", "single_word" })
                        if (p.Value.TryGetProperty(flag, out var f) && f.ValueKind == JsonValueKind.True)
                            throw new InputException(config, $"added_tokens_decoder[\"{p.Name}\"]: {flag}=true is not supported");
                    if (!added.TryAdd(c.GetString()!, id)) throw new InputException(config, $"added_tokens_decoder: \"{c.GetString()}\" appears twice");
                }
            }
            string? tokenizerClass = root.TryGetProperty("tokenizer_class", out var tc) && tc.ValueKind == JsonValueKind.String ? tc.GetString() : null;
            return (Token("bos_token"), Token("eos_token"), Token("unk_token"), added, tokenizerClass);
        }
        catch (JsonException e) { throw new InputException(config, "not valid JSON: " + e.Message, e); }
        catch (IOException e) { throw new InputException(config, "cannot read: " + e.Message, e); }
    }
}
