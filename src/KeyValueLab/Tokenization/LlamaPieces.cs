namespace KeyValueLab.Tokenization;

/// <summary>
/// llama2.c's view of a SentencePiece vocabulary: pieces as bytes with '▁' already turned into ' ',
/// BOS/EOS spelled "\n&lt;s&gt;\n" and "\n&lt;/s&gt;\n" (llama2.c tokenizer.py <c>export</c>), byte tokens "&lt;0xXX&gt;".
/// </summary>
internal static class LlamaPieces
{
    /// <summary>
    /// run.c <c>decode</c>: after BOS a leading space of the piece is dropped; a piece "&lt;0xXX&gt;" stands for
    /// that byte (byte 0 prints as nothing, as a C string would).
    /// </summary>
    public static byte[] DecodeToken(byte[][] pieces, int bosId, int previousId, int id)
    {
        if ((uint)id >= (uint)pieces.Length) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside 0..{pieces.Length - 1}");
        var piece = pieces[id].AsSpan();
        if (previousId == bosId && piece.Length > 0 && piece[0] == (byte)' ') piece = piece[1..];
        if (TryParseByteToken(piece, out byte b)) return b == 0 ? [] : [b];
        return piece.ToArray();
    }

    /// <summary>
    /// The whole sequence as text: BOS/EOS print nothing, and the sequence starts as if after BOS, so the
    /// dummy-prefix space of the first piece goes, as SentencePiece's decode does.
    /// </summary>
    public static string Decode(byte[][] pieces, int bosId, int eosId, IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        int previous = bosId;
        foreach (int id in ids)
        {
            if (id != bosId && id != eosId) bytes.AddRange(DecodeToken(pieces, bosId, previous, id));
            previous = id;
        }
        return TokenBytes.ToText(bytes.ToArray());
    }

    /// <summary>sscanf(piece, "&lt;0x%02hhX&gt;"): "&lt;0x" then one or two hex digits.</summary>
    private static bool TryParseByteToken(ReadOnlySpan<byte> piece, out byte value)
    {
        value = 0;
        if (piece.Length < 4 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || !IsHex(piece[3])) return false;
        int v = Hex(piece[3]);
        if (piece.Length > 4 && IsHex(piece[4])) v = v * 16 + Hex(piece[4]);
        value = (byte)v;
        return true;
    }

    private static bool IsHex(byte c) => c is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f' or >= (byte)'A' and <= (byte)'F';
    private static int Hex(byte c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}
