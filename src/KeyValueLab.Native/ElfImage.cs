using System.Buffers.Binary;
using System.Text;

namespace KeyValueLab.Native;

/// <summary>
/// Just enough of an ELF64 little-endian reader to see which symbol versions a shared library
/// needs (<c>.gnu.version_r</c>), which it defines (<c>.gnu.version_d</c>), which dynamic symbols
/// carry which version, and which symbols relocations refer to. Used to decide whether the native
/// TorchSharp library can load against this system's libstdc++ and, if not, to patch a copy.
/// </summary>
internal sealed class ElfImage
{
    private const uint ShtRela = 4, ShtRel = 9, ShtDynsym = 11;
    private const uint ShtGnuVerdef = 0x6ffffffd, ShtGnuVerneed = 0x6ffffffe, ShtGnuVersym = 0x6fffffff;

    public byte[] Bytes { get; }
    public string Path { get; }

    private readonly List<Section> _sections = new();

    public ElfImage(string path, byte[] bytes)
    {
        Path = path;
        Bytes = bytes;
        if (bytes.Length < 64 || bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F')
            throw new InvalidDataException($"{path}: not an ELF file");
        if (bytes[4] != 2 || bytes[5] != 1)
            throw new InvalidDataException($"{path}: only 64-bit little-endian ELF files are supported");
        ulong shoff = U64(0x28);
        int shentsize = U16(0x3A), shnum = U16(0x3C);
        if (shoff == 0 || shentsize < 64 || (ulong)shnum * (ulong)shentsize + shoff > (ulong)bytes.Length)
            throw new InvalidDataException($"{path}: section header table is missing or outside the file");
        for (int i = 0; i < shnum; i++)
        {
            int o = checked((int)shoff + i * shentsize);
            var s = new Section(i, U32(o + 4), U64(o + 0x18), U64(o + 0x20), U32(o + 0x28), U32(o + 0x2C), U64(o + 0x38));
            if (s.Type != 8 /* NOBITS */ && s.Offset + s.Size > (ulong)bytes.Length)
                throw new InvalidDataException($"{path}: section {i} lies outside the file");
            _sections.Add(s);
        }
    }

    public static ElfImage Read(string path) => new(path, File.ReadAllBytes(path));

    private readonly record struct Section(int Index, uint Type, ulong Offset, ulong Size, uint Link, uint Info, ulong EntSize);

    /// <summary>One needed version: the library that must define it, its name, and its version index.</summary>
    public sealed record VersionNeed(string File, string Name, ushort Index, int AuxOffset, ushort Flags);

    /// <summary>One dynamic symbol.</summary>
    public sealed record DynSymbol(int Index, string Name, uint NameOffset, ushort Version, bool Undefined, int Offset);

    private Section? Find(uint type) => _sections.FirstOrDefault(s => s.Type == type) is var s && s.Type == type ? s : null;

    private string ReadString(Section strtab, uint offset)
    {
        int start = checked((int)(strtab.Offset + offset));
        int end = Array.IndexOf(Bytes, (byte)0, start);
        if (end < 0 || (ulong)end > strtab.Offset + strtab.Size) throw new InvalidDataException($"{Path}: unterminated string");
        return Encoding.ASCII.GetString(Bytes, start, end - start);
    }

    private Section DynStr => _sections[(int)(Find(ShtDynsym) ?? throw new InvalidDataException($"{Path}: no .dynsym")).Link];

    /// <summary>Versions this library defines (<c>.gnu.version_d</c>), e.g. GLIBCXX_3.4.30 for libstdc++.</summary>
    public IReadOnlyList<string> DefinedVersions()
    {
        var result = new List<string>();
        if (Find(ShtGnuVerdef) is not { } vd) return result;
        var strtab = _sections[(int)vd.Link];
        int o = (int)vd.Offset;
        for (uint n = 0; n < vd.Info; n++)
        {
            int aux = o + (int)U32(o + 12);
            result.Add(ReadString(strtab, U32(aux)));
            uint next = U32(o + 16);
            if (next == 0) break;
            o += (int)next;
        }
        return result;
    }

    /// <summary>Versions this library needs from others (<c>.gnu.version_r</c>).</summary>
    public IReadOnlyList<VersionNeed> NeededVersions()
    {
        var result = new List<VersionNeed>();
        if (Find(ShtGnuVerneed) is not { } vn) return result;
        var strtab = _sections[(int)vn.Link];
        int o = (int)vn.Offset;
        for (uint n = 0; n < vn.Info; n++)
        {
            ushort cnt = U16(o + 2);
            string file = ReadString(strtab, U32(o + 4));
            int aux = o + (int)U32(o + 8);
            for (int a = 0; a < cnt; a++)
            {
                result.Add(new VersionNeed(file, ReadString(strtab, U32(aux + 8)), U16(aux + 6), aux, U16(aux + 4)));
                uint anext = U32(aux + 12);
                if (anext == 0) break;
                aux += (int)anext;
            }
            uint next = U32(o + 12);
            if (next == 0) break;
            o += (int)next;
        }
        return result;
    }

    public IReadOnlyList<DynSymbol> DynamicSymbols()
    {
        var dynsym = Find(ShtDynsym) ?? throw new InvalidDataException($"{Path}: no .dynsym");
        var versym = Find(ShtGnuVersym);
        var strtab = DynStr;
        int count = (int)(dynsym.Size / 24);
        var result = new List<DynSymbol>(count);
        for (int i = 0; i < count; i++)
        {
            int o = (int)dynsym.Offset + i * 24;
            uint name = U32(o);
            ushort shndx = U16(o + 6);
            ushort ver = versym is { } vs ? (ushort)(U16((int)vs.Offset + 2 * i) & 0x7fff) : (ushort)1;
            result.Add(new DynSymbol(i, ReadString(strtab, name), name, ver, shndx == 0, o));
        }
        return result;
    }

    /// <summary>Indices of dynamic symbols referenced by any relocation (REL or RELA against .dynsym).</summary>
    public HashSet<int> RelocatedSymbols()
    {
        var set = new HashSet<int>();
        foreach (var s in _sections)
        {
            if (s.Type != ShtRela && s.Type != ShtRel) continue;
            if (_sections[(int)s.Link].Type != ShtDynsym) continue;
            int entsize = s.Type == ShtRela ? 24 : 16;
            for (ulong off = 0; off + (ulong)entsize <= s.Size; off += (ulong)entsize)
                set.Add((int)(U64((int)(s.Offset + off) + 8) >> 32));
        }
        return set;
    }

    /// <summary>The System V ELF hash used in vna_hash.</summary>
    public static uint ElfHash(string name)
    {
        uint h = 0;
        foreach (byte c in Encoding.ASCII.GetBytes(name))
        {
            h = (h << 4) + c;
            uint g = h & 0xf0000000;
            if (g != 0) h ^= g >> 24;
            h &= ~g;
        }
        return h;
    }

    public void WriteU16(int offset, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(Bytes.AsSpan(offset), v);
    public void WriteU32(int offset, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(Bytes.AsSpan(offset), v);
    private ushort U16(int o) => BinaryPrimitives.ReadUInt16LittleEndian(Bytes.AsSpan(o));
    private uint U32(int o) => BinaryPrimitives.ReadUInt32LittleEndian(Bytes.AsSpan(o));
    private ulong U64(int o) => BinaryPrimitives.ReadUInt64LittleEndian(Bytes.AsSpan(o));
}
