using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Inference;

/// <summary>How a prompt becomes the ids a model is fed.</summary>
public static class PromptEncoding
{
    /// <summary>
    /// Whether a model expects BOS before a prompt, as its architecture's tokenizer adds by default
    /// (<see cref="Architecture.PromptBos"/>): Llama, Mistral and Gemma were trained with it (SentencePiece adds it,
    /// so do llama2.c and Hugging Face); GPT-2, GPT-J, GPT-NeoX, Qwen2 and Phi-3 were not.
    /// </summary>
    public static bool UsesBos(CausalLM model) => Architectures.Of(model.Config.ModelType).PromptBos;

    /// <summary>
    /// Ids of <paramref name="prompt"/>, with BOS first when <paramref name="addBos"/> (default
    /// <see cref="UsesBos"/>) and the tokenizer has one.
    /// </summary>
    public static int[] Encode(CausalLM model, ITokenizer tokenizer, string prompt, bool? addBos = null)
    {
        bool bos = (addBos ?? UsesBos(model)) && tokenizer.BosId is not null;
        return [.. tokenizer.Encode(prompt, bos)];
    }

    /// <summary>
    /// True when the tokenizer puts a space before the text it encodes (SentencePiece's dummy prefix,
    /// llama2.c's encode): "x" then already encodes as the word-initial "▁x".
    /// </summary>
    public static bool AddsDummyPrefix(ITokenizer tokenizer)
    {
        var ids = tokenizer.Encode("x");
        return ids.Count > 0 && tokenizer.TokenText(ids[0]) is [' ' or '▁', ..];
    }

    /// <summary>
    /// Ids of a target continuation, word-initial as SPEC §3's <c>tokenize(" " + o)</c>:
    /// <paramref name="targetPrefix"/> (default " ") is put before the target, except by default for
    /// tokenizers that add a dummy-prefix space themselves, where " " + o would start with a lone "▁" token.
    /// </summary>
    public static int[] EncodeTarget(ITokenizer tokenizer, string target, string? targetPrefix = null)
    {
        targetPrefix ??= AddsDummyPrefix(tokenizer) ? "" : " ";
        return [.. tokenizer.Encode(targetPrefix + target)];
    }
}
