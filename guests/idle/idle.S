/*
 * cellvisor's idle test guest: prints one line on COM1 and halts with interrupts off, so the
 * VM stays up using no CPU (for counting what many microVMs cost in host memory).
 * Build: scripts/mktiny.sh OUT.elf idle
 */
        .intel_syntax noprefix
        .code64
        .text
        .globl _start
_start:
        cli
        lea rsi, [rip + msg]
        mov dx, 0x3f8
1:      lodsb
        test al, al
        jz 2f
        out dx, al
        jmp 1b
2:      hlt
        jmp 2b
        .data
msg:    .asciz "idle guest: up\n"
