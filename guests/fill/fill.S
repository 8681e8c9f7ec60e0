/*
 * cellvisor's fill test guest: writes 32 MiB of its memory (from 16 MiB up) with content
 * that differs from page to page but is the same in every VM that runs it, prints one line on
 * COM1 and halts with interrupts off. Alike VMs then hold 8192 identical pages each: what
 * page merging (KSM) can keep once (`cellvisor bench vms --merge`). Needs 64 MiB of memory.
 * Build: scripts/mktiny.sh OUT.elf fill
 */
        .intel_syntax noprefix
        .code64
        .text
        .globl _start
_start:
        cli
        mov rdi, 0x1000000      /* 16 MiB */
        xor edx, edx            /* page number */
1:      mov rax, rdx            /* every quadword of page n holds n */
        mov ecx, 512
        rep stosq
        inc rdx
        cmp rdx, 8192           /* 32 MiB of 4 KiB pages */
        jb 1b
        lea rsi, [rip + msg]
        mov dx, 0x3f8
2:      lodsb
        test al, al
        jz 3f
        out dx, al
        jmp 2b
3:      hlt
        jmp 3b
        .data
msg:    .asciz "fill guest: up\n"
