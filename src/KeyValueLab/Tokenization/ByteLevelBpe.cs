namespace KeyValueLab.Tokenization;

/// <summary>
/// Byte-level BPE of one pre-token in O(n log n): start from one token per byte, then repeatedly merge the adjacent
/// pair with the lowest merge rank, the leftmost on equal ranks, as Hugging Face tokenizers' <c>Word::merge_all</c>
/// does (and tiktoken, whose ranks order the merges derived from them). Used for pre-tokens longer than
/// <see cref="LongPiece"/> characters: Microsoft.ML.Tokenizers 2.0.1 takes about 50 µs per character on a long
/// pre-token of letters (BpeTokenizer) and is quadratic through TiktokenTokenizer (4.4 s for 40,000 letters), so
/// a long prompt without spaces never finished there.
/// </summary>
internal sealed class ByteLevelBpe
{
    /// <summary>Pre-tokens longer than this (in UTF-16 characters) are encoded here rather than by the library.</summary>
    public const int LongPiece = 256;

    private readonly int[] _byteIds;  // [byte] → id of its one-byte token, or -1
    private readonly Dictionary<long, (int Rank, int Merged)> _merges;

    /// <param name="idOf">The id of a token spelled in GPT-2's byte-to-character alphabet, or null.</param>
    /// <param name="merges">"left right" in priority order, both sides and their concatenation in the vocabulary.</param>
    public ByteLevelBpe(Func<string, int?> idOf, IReadOnlyList<string> merges)
    {
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++) _byteIds[b] = idOf(Gpt2Tokenizer.ByteLevel.ToChars([(byte)b])) ?? -1;
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            string m = merges[rank];
            int space = m.IndexOf(' ');
            if (idOf(m[..space]) is int left && idOf(m[(space + 1)..]) is int right && idOf(m[..space] + m[(space + 1)..]) is int merged)
                _merges.TryAdd(Key(left, right), (rank, merged));
        }
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>The ids of one pre-token, or null when one of its bytes has no token (left to the library's unknown handling).</summary>
    public int[]? Encode(ReadOnlySpan<byte> bytes)
    {
        var token = new int[bytes.Length];
        for (int i = 0; i < token.Length; i++)
            if ((token[i] = _byteIds[bytes[i]]) < 0) return null;
        // Lowest merge rank first (the order of merges.txt).
        return [.. PairMerge.Run(token, (left, right) => _merges.TryGetValue(Key(left, right), out var m) ? (m.Merged, m.Rank) : null,
            Comparer<(int Rank, int Left)>.Default)];
    }
}
