using System.Text;

namespace KeyValueLab.Tokenization;

/// <summary>Byte-string helpers shared by the tokenizers.</summary>
internal static class TokenBytes
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>UTF-8 text of <paramref name="bytes"/>; invalid sequences become U+FFFD.</summary>
    public static string ToText(byte[] bytes) => Encoding.UTF8.GetString(bytes);

    /// <summary>UTF-8 text of <paramref name="bytes"/> if valid, else each byte shown as <c>&lt;0xXX&gt;</c>, valid characters kept.</summary>
    public static string ToDisplay(byte[] bytes)
    {
        try { return Strict.GetString(bytes); }
        catch (DecoderFallbackException) { }
        var sb = new StringBuilder();
        int i = 0;
        while (i < bytes.Length)
        {
            int n = ValidSequenceLength(bytes, i);
            if (n > 0) { sb.Append(Encoding.UTF8.GetString(bytes, i, n)); i += n; }
            else { sb.Append($"<0x{bytes[i]:X2}>"); i++; }
        }
        return sb.ToString();
    }

    /// <summary>Length of the valid UTF-8 character starting at <paramref name="i"/>, or 0.</summary>
    private static int ValidSequenceLength(byte[] b, int i)
    {
        int n = b[i] < 0x80 ? 1 : b[i] >= 0xC2 && b[i] <= 0xDF ? 2 : b[i] >= 0xE0 && b[i] <= 0xEF ? 3 : b[i] >= 0xF0 && b[i] <= 0xF4 ? 4 : 0;
        if (n == 0 || i + n > b.Length) return 0;
        try { Strict.GetString(b, i, n); return n; }
        catch (DecoderFallbackException) { return 0; }
    }
}
