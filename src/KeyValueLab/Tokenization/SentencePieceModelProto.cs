using System.Text;

namespace KeyValueLab.Tokenization;

/// <summary>One SentencePiece vocabulary entry; <c>Type</c> as sentencepiece_model.proto (and GGUF token_type):
/// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.</summary>
internal readonly record struct SentencePiece(string Piece, float Score, int Type);

/// <summary>
/// The few fields of sentencepiece_model.proto this project needs, read and written directly in protobuf wire
/// format: <c>ModelProto.pieces</c> (1: piece 1, score 2, type 3), <c>trainer_spec</c> (2: model_type 3,
/// byte_fallback 35, unk_id 40, bos_id 41, eos_id 42, pad_id 43) and <c>normalizer_spec</c> (3: name 1,
/// add_dummy_prefix 3, remove_extra_whitespaces 4, escape_whitespaces 5).
/// </summary>
internal static class SentencePieceModelProto
{
    public const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    /// <summary>The pieces of a serialised ModelProto.</summary>
    /// <exception cref="FormatException">Not valid protobuf.</exception>
    public static SentencePiece[] ReadPieces(ReadOnlySpan<byte> model)
    {
        var pieces = new List<SentencePiece>();
        int at = 0;
        while (at < model.Length)
        {
            var (field, wire) = Key(model, ref at);
            if (field == 1 && wire == 2)
            {
                var body = LengthDelimited(model, ref at);
                string piece = ""; float score = 0; int type = Normal;
                int p = 0;
                while (p < body.Length)
                {
                    var (f, w) = Key(body, ref p);
                    if (f == 1 && w == 2) piece = Encoding.UTF8.GetString(LengthDelimited(body, ref p));
                    else if (f == 2 && w == 5) { score = BitConverter.ToSingle(body.Slice(p, 4)); p += 4; }
                    else if (f == 3 && w == 0) type = (int)Varint(body, ref p);
                    else Skip(body, ref p, w);
                }
                pieces.Add(new SentencePiece(piece, score, type));
            }
            else Skip(model, ref at, wire);
        }
        return pieces.ToArray();
    }

    /// <summary>A Llama-style BPE ModelProto (the settings of Meta's Llama tokenizer.model) holding <paramref name="pieces"/>.</summary>
    public static byte[] Build(IReadOnlyList<SentencePiece> pieces, int unkId, int bosId, int eosId, int padId, bool addDummyPrefix, bool byteFallback)
    {
        var model = new MemoryStream();
        foreach (var p in pieces)
        {
            var body = new MemoryStream();
            WriteBytes(body, 1, Encoding.UTF8.GetBytes(p.Piece));
            WriteKey(body, 2, 5);
            body.Write(BitConverter.GetBytes(p.Score));
            WriteKey(body, 3, 0);
            WriteVarint(body, (ulong)p.Type);
            WriteBytes(model, 1, body.ToArray());
        }
        var trainer = new MemoryStream();
        WriteInt(trainer, 3, 2);                      // model_type BPE
        WriteInt(trainer, 4, pieces.Count);           // vocab_size
        WriteInt(trainer, 35, byteFallback ? 1 : 0);
        WriteInt(trainer, 40, unkId);
        WriteInt(trainer, 41, bosId);
        WriteInt(trainer, 42, eosId);
        WriteInt(trainer, 43, padId);
        WriteBytes(model, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        WriteBytes(normalizer, 1, "identity"u8.ToArray());
        WriteInt(normalizer, 3, addDummyPrefix ? 1 : 0);
        WriteInt(normalizer, 4, 0);                   // remove_extra_whitespaces false (Llama)
        WriteInt(normalizer, 5, 1);                   // escape_whitespaces
        WriteBytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    private static (int Field, int Wire) Key(ReadOnlySpan<byte> b, ref int at)
    {
        ulong k = Varint(b, ref at);
        return ((int)(k >> 3), (int)(k & 7));
    }

    private static ulong Varint(ReadOnlySpan<byte> b, ref int at)
    {
        ulong v = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (at >= b.Length) throw new FormatException("protobuf varint runs past the end");
            byte x = b[at++];
            v |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return v;
        }
        throw new FormatException("protobuf varint longer than 10 bytes");
    }

    private static ReadOnlySpan<byte> LengthDelimited(ReadOnlySpan<byte> b, ref int at)
    {
        ulong n = Varint(b, ref at);
        if (n > (ulong)(b.Length - at)) throw new FormatException("protobuf field runs past the end");
        var s = b.Slice(at, (int)n);
        at += (int)n;
        return s;
    }

    private static void Skip(ReadOnlySpan<byte> b, ref int at, int wire)
    {
        switch (wire)
        {
            case 0: Varint(b, ref at); break;
            case 1: at += 8; break;
            case 2: LengthDelimited(b, ref at); break;
            case 5: at += 4; break;
            default: throw new FormatException($"protobuf wire type {wire} is not supported");
        }
        if (at > b.Length) throw new FormatException("protobuf field runs past the end");
    }

    private static void WriteKey(Stream s, int field, int wire) => WriteVarint(s, (ulong)((field << 3) | wire));

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
        s.WriteByte((byte)v);
    }

    private static void WriteInt(Stream s, int field, int value)
    {
        WriteKey(s, field, 0);
        WriteVarint(s, (ulong)(long)value);   // negative int32: ten bytes, as protobuf does
    }

    private static void WriteBytes(Stream s, int field, byte[] bytes)
    {
        WriteKey(s, field, 2);
        WriteVarint(s, (ulong)bytes.Length);
        s.Write(bytes);
    }
}
